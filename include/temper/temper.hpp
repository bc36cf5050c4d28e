// Umbrella header: everything in temper's public C++ API.
#pragma once

#include "temper/config.hpp"
#include "temper/generation.hpp"
#include "temper/model.hpp"
#include "temper/status.hpp"
#include "temper/token.hpp"
#include "temper/tokenizer.hpp"
#include "temper/version.hpp"
