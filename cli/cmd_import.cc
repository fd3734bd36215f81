// `pagewise import RAW IMAGE [--page-size N] [--compress zstd|lz4|none]
// [--level N] [--json]`: a flat memory file (e.g. Firecracker's guest-memory
// snapshot) becomes an image with one kFlat region at flat_offset 0
// (ImportFlatFile: streamed in 4 MiB blocks, holes recorded as zero pages
// without being read). IMAGE is replaced only once complete; an interrupt
// leaves no temporary file.
#include <cstdio>
#include <iostream>
#include <memory>

#include "command.h"
#include "criu_cli.h"
#include "image_util.h"
#include "pagewise/flat_file.h"

namespace pagewise::cli {
namespace {

struct ImportArgs {
  std::string raw, image, compress = "zstd";
  std::string criu;  // --criu DIR: a CRIU dump instead of RAW (cmd_criu.cc)
  uint32_t page_size = 4096;
  int level = 1;
  bool json = false;
};

Status Import(const ImportArgs& a, ImageStats* stats) {
  ImportOptions o;
  PW_ASSIGN_OR_RETURN(o.write.compression, ParseCompression(a.compress));
  o.write.level = a.level;
  o.page_size = a.page_size;
  ProgressLine progress("import " + a.raw);
  return ImportFlatFile(a.raw, a.image, o, stats, progress.Fn());
}

CommandRegistration reg(
    "import", "Convert a flat memory file into a page image", [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<ImportArgs>();
      app->add_option("RAW", a->raw, "Flat memory file (not with --criu)");
      app->add_option("IMAGE", a->image, "Image to write");
      app->add_option("--criu", a->criu, "Import a CRIU dump directory: import --criu DIR IMAGE");
      app->add_option("--page-size", a->page_size,
                      "Page size in bytes: a power of two, 512 .. 16 MiB (default 4096)")
          ->check(PowerOfTwoIn(512, 16u << 20));
      app->add_option("--compress", a->compress, "zstd (default), lz4 or none")
          ->check(CLI::IsMember({"zstd", "lz4", "none"}));
      app->add_option("--level", a->level, "zstd level (default 1)");
      app->add_flag("--json", a->json, "Print the result as JSON");
      return [a]() -> int {
        if (!a->criu.empty()) {
          if (!a->image.empty() || a->raw.empty()) {
            return Fail("import", Status::InvalidArgument("usage: import --criu DIR IMAGE"));
          }
          return RunCriuImport(a->criu, a->raw, a->compress, a->level, a->json);
        }
        if (a->raw.empty() || a->image.empty()) {
          return Fail("import", Status::InvalidArgument("usage: import RAW IMAGE"));
        }
        ImageStats st;
        Status s = Import(*a, &st);
        if (!s.ok()) return Fail("import", s);
        if (a->json) {
          std::cout << nlohmann::json{{"image", a->image},
                                      {"raw", a->raw},
                                      {"stats", StatsJson(st)}}
                           .dump(2)
                    << std::endl;
        } else {
          std::printf(
              "%s: %llu pages (%llu zero, %llu duplicate, %llu stored), data %s -> %s, "
              "file %s\n",
              a->image.c_str(), static_cast<unsigned long long>(st.pages),
              static_cast<unsigned long long>(st.zero_pages),
              static_cast<unsigned long long>(st.duplicate_pages),
              static_cast<unsigned long long>(st.stored_pages), HumanBytes(st.raw_bytes).c_str(),
              HumanBytes(st.compressed_bytes).c_str(), HumanBytes(st.file_bytes).c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
