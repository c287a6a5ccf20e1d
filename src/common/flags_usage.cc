#include "common/flags_usage.h"

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "common/strings.h"

namespace wallet {

namespace {
std::string_view main_file;  // set once, before parsing
}  // namespace

void SetUpFlagsUsage(std::string_view main_file_suffix, std::string_view usage) {
  main_file = main_file_suffix;
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view path) { return absl::EndsWith(path, ToAbsl(main_file)); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(ToAbsl(usage));
}

}  // namespace wallet
