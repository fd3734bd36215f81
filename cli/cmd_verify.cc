// `pagewise verify IMAGE [--json]`: checks every byte of every layer of the
// chain (header and index checksums at open, then every data chunk: stored
// checksum, decompression, decompressed checksum). Exit status 0 when
// sound; 1 naming the first bad layer, region and offset otherwise.
#include <cstdio>
#include <iostream>
#include <memory>

#include "command.h"
#include "image_util.h"
#include "pagewise/image.h"

namespace pagewise::cli {
namespace {

int Report(bool json, const std::string& path, const VerifyError& e, const Status& s) {
  if (json) {
    std::cout
        << nlohmann::json{{"image", path},       {"ok", false},        {"code", CodeName(s.code())},
                          {"layer", e.layer},    {"region", e.region}, {"offset", e.offset},
                          {"error", s.message()}}
               .dump(2)
        << std::endl;
  }
  std::fprintf(stderr,
               "pagewise verify: %s: FAILED\n  layer  %s\n  region %s\n  offset %s%s\n  %s\n",
               path.c_str(), e.layer.c_str(),
               e.region < 0 ? "- (not region data)" : std::to_string(e.region).c_str(),
               HexAddr(e.offset).c_str(), e.region < 0 ? " (file offset)" : " (in region)",
               s.ToString().c_str());
  return s.code() == Code::kNotSupported ? 3 : 1;
}

CommandRegistration reg(
    "verify", "Check every checksum of an image and its parents", [](CLI::App* app) -> RunFn {
      auto path = std::make_shared<std::string>();
      auto json = std::make_shared<bool>(false);
      app->add_option("IMAGE", *path, "Image (top layer of a chain)")->required();
      app->add_flag("--json", *json, "Print one JSON object");
      return [path, json]() -> int {
        VerifyError e;
        Status s;
        {
          ProgressLine progress("verify " + *path);
          s = VerifyImage(*path, &e, progress.Fn());
        }
        if (!s.ok()) {
          if (s.code() != Code::kCorruption && s.code() != Code::kNotSupported) {
            return Fail("verify", s);
          }
          return Report(*json, *path, e, s);
        }
        Result<std::unique_ptr<Image>> opened = Image::Open(*path);
        if (!opened.ok()) return Fail("verify", opened.status());
        const Image& img = **opened;
        uint64_t bytes = 0;
        for (const LayerInfo& l : img.layers()) bytes += l.stats.file_bytes;
        if (*json) {
          std::cout << nlohmann::json{{"image", *path},
                                      {"ok", true},
                                      {"layers", img.layers().size()},
                                      {"bytes", bytes}}
                           .dump(2)
                    << std::endl;
        } else {
          std::printf("%s: OK (%zu layer(s), %s checked)\n", path->c_str(), img.layers().size(),
                      HumanBytes(bytes).c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
