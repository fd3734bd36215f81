// `pagewise export IMAGE RAW [--json]`: writes the image's flat view (regions
// at their flat_offset, gaps zero; read with ReadFlat) as a flat memory file,
// byte-identical to the file that was imported. Zero and absent pages and
// all-zero 4 KiB blocks are left as holes, so the output is sparse. RAW is
// replaced only once complete (pagewise/output_file.h); RAW may not be a
// layer of IMAGE's chain.
#include <cstdio>
#include <iostream>
#include <memory>

#include "command.h"
#include "image_util.h"
#include "pagewise/flat_file.h"

namespace pagewise::cli {
namespace {

struct ExportArgs {
  std::string image, raw;
  bool json = false;
};

CommandRegistration reg(
    "export", "Write an image back out as a flat memory file", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<ExportArgs>();
      app->add_option("IMAGE", a->image, "Image (top layer of a chain)")->required();
      app->add_option("RAW", a->raw, "Flat memory file to write")->required();
      app->add_flag("--json", a->json, "Print the result as JSON");
      return [a]() -> int {
        ExportResult r;
        Status s;
        {
          ProgressLine progress("export " + a->image);
          s = ExportFlatFile(a->image, a->raw, &r, progress.Fn());
        }
        if (!s.ok())
          return Fail("export", s.WithContext("export to " + a->raw + " (left unchanged)"));
        if (a->json) {
          std::cout << nlohmann::json{{"raw", a->raw},
                                      {"bytes", r.bytes},
                                      {"data_bytes", r.data_bytes}}
                           .dump(2)
                    << std::endl;
        } else {
          std::printf("%s: %s (%s non-zero, the rest sparse)\n", a->raw.c_str(),
                      HumanBytes(r.bytes).c_str(), HumanBytes(r.data_bytes).c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
