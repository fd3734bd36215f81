// Helpers shared by the image commands (import, export, inspect, verify,
// flatten, diff): progress lines on stderr and human-readable sizes.
//
// Thread safety: a ProgressLine is used from the thread running the command.
#ifndef PAGEWISE_CLI_IMAGE_UTIL_H_
#define PAGEWISE_CLI_IMAGE_UTIL_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "pagewise/image.h"

namespace pagewise::cli {

// A progress line ("label: 42% (1.2 GiB of 2.9 GiB)") redrawn in place on
// stderr at most ten times a second, and only when stderr is a terminal.
// The destructor erases it.
class ProgressLine {
 public:
  explicit ProgressLine(std::string label);
  ~ProgressLine();
  void Update(uint64_t done, uint64_t total);
  // A ProgressFn forwarding to Update (valid while this object lives).
  ProgressFn Fn();

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  uint64_t last_ns_ = 0;
};

// "1.5 GiB", "12 KiB", "100 B".
std::string HumanBytes(uint64_t bytes);
// "0x7f00..." address formatting.
std::string HexAddr(uint64_t v);

std::string_view RegionKindName(RegionKind k);
nlohmann::json StatsJson(const ImageStats& s);

}  // namespace pagewise::cli

#endif  // PAGEWISE_CLI_IMAGE_UTIL_H_
