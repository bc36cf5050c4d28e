// Umbrella header: everything in temper's public C++ API.
#pragma once

#include "temper/batch.hpp"
#include "temper/config.hpp"
#include "temper/data_mixer.hpp"
#include "temper/data_options.hpp"
#include "temper/export.hpp"
#include "temper/generation.hpp"
#include "temper/log.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"
#include "temper/record_stream.hpp"
#include "temper/runtime.hpp"
#include "temper/status.hpp"
#include "temper/token.hpp"
#include "temper/tokenizer.hpp"
#include "temper/trainer.hpp"
#include "temper/version.hpp"
