// Umbrella header for the flashattn C++ API.
#pragma once
#include "flashattn/attention.hpp"
#include "flashattn/error.hpp"
#include "flashattn/tensor.hpp"
#include "flashattn/version.hpp"
