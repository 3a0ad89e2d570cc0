// The former name of api::Services (services.h), kept while src/cli/cmd_train.cpp and
// src/cli/cmd_data.cpp still include this header; new code includes api/services.h.
#pragma once

#include "api/services.h"

namespace dlsys::api {

using Backend = Services;
using BackendOptions = ServicesOptions;

}  // namespace dlsys::api
