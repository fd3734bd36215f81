// `pagewise flatten IMAGE OUT [--compress zstd|lz4|none] [--level N] [--json]`:
// merges a chain (IMAGE and its parents) into one base image OUT.
#include <cstdio>
#include <iostream>
#include <memory>

#include "command.h"
#include "image_util.h"
#include "pagewise/image.h"

namespace pagewise::cli {
namespace {

struct FlattenArgs {
  std::string in, out, compress = "zstd";
  int level = 1;
  bool json = false;
};

CommandRegistration reg(
    "flatten", "Merge an image chain into a single base image", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<FlattenArgs>();
      app->add_option("IMAGE", a->in, "Image (top layer of a chain)")->required();
      app->add_option("OUT", a->out, "Base image to write")->required();
      app->add_option("--compress", a->compress, "zstd (default), lz4 or none");
      app->add_option("--level", a->level, "zstd level (default 1)");
      app->add_flag("--json", a->json, "Print the result as JSON");
      return [a]() -> int {
        Result<Compression> comp = ParseCompression(a->compress);
        if (!comp.ok()) return Fail("flatten", comp.status());
        ImageWriteOptions opt;
        opt.compression = *comp;
        opt.level = a->level;
        Status s;
        {
          ProgressLine progress("flatten " + a->in);
          s = FlattenImage(a->in, a->out, opt, progress.Fn());
        }
        if (!s.ok()) return Fail("flatten", s);
        Result<std::unique_ptr<Image>> in = Image::Open(a->in);
        Result<std::unique_ptr<Image>> out = Image::Open(a->out);
        if (!in.ok()) return Fail("flatten", in.status());
        if (!out.ok()) return Fail("flatten", out.status());
        const ImageStats& st = (*out)->layers()[0].stats;
        if (a->json) {
          std::cout << nlohmann::json{{"image", a->out},
                                      {"layers_merged", (*in)->layers().size()},
                                      {"stats", StatsJson(st)}}
                           .dump(2)
                    << std::endl;
        } else {
          std::printf(
              "%s: %zu layer(s) merged, %llu pages (%llu stored), file %s\n", a->out.c_str(),
              (*in)->layers().size(), static_cast<unsigned long long>(st.pages),
              static_cast<unsigned long long>(st.stored_pages), HumanBytes(st.file_bytes).c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
