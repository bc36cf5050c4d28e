/* A C program built against the installed temper: only temper.h and libtemper_c.so. */
#include <stdio.h>
#include <string.h>

#include <temper.h>

int main(void) {
  temper_model* model = NULL;
  if (temper_version_number() != TEMPER_C_VERSION_NUMBER) return 1;
  if (temper_model_load(&model, "/nonexistent", NULL) != TEMPER_NOT_FOUND || model != NULL) return 2;
  if (strstr(temper_last_error(), "temper_model_load") == NULL) return 3;
  printf("%s\n", temper_build_info());
  return 0;
}
