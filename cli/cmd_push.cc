// `pagewise push IMAGE s3://BUCKET/NAME`: uploads a local image chain to
// object storage, skipping layers and chunks the bucket already has.
// Prints what it uploaded (JSON with --json).
#include <cstdio>
#include <iostream>
#include <memory>

#include "command.h"
#include "image_util.h"
#include "pagewise/remote.h"
#include "remote_flags.h"

namespace pagewise::cli {
namespace {

struct PushArgs {
  std::string image, url;
  RemoteFlags remote;
  bool json = false;
};

CommandRegistration reg(
    "push", "Upload an image chain to S3 (s3://BUCKET/NAME), skipping what is there",
    [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<PushArgs>();
      app->add_option("IMAGE", a->image, "Local image (top layer of a chain)")->required();
      app->add_option("URL", a->url, "Destination s3://BUCKET/NAME")->required();
      AddRemoteFlags(app, &a->remote);
      app->add_flag("--json", a->json, "Print the result as JSON");
      return [a]() -> int {
        PushOptions o;
        o.remote = a->remote.Get();
        Result<PushStats> r = [&] {
          ProgressLine progress("push " + a->image);
          o.progress = progress.Fn();
          return PushImage(a->image, a->url, o);
        }();
        if (!r.ok()) return Fail("push", r.status());
        const PushStats& s = *r;
        if (a->json) {
          std::cout << nlohmann::json{{"image", a->image},
                                      {"url", a->url},
                                      {"layers", s.layers},
                                      {"layers_uploaded", s.layers_uploaded},
                                      {"chunks", s.chunks},
                                      {"chunks_uploaded", s.chunks_uploaded},
                                      {"chunk_bytes_uploaded", s.chunk_bytes_uploaded},
                                      {"manifest_bytes_uploaded", s.manifest_bytes_uploaded},
                                      {"bytes_uploaded", s.bytes_uploaded()},
                                      {"name_updated", s.name_updated}}
                           .dump(2)
                    << std::endl;
        } else {
          std::printf(
              "%s -> %s: %llu of %llu layer(s) new, %llu of %llu chunk(s) uploaded, %s "
              "sent%s\n",
              a->image.c_str(), a->url.c_str(), static_cast<unsigned long long>(s.layers_uploaded),
              static_cast<unsigned long long>(s.layers),
              static_cast<unsigned long long>(s.chunks_uploaded),
              static_cast<unsigned long long>(s.chunks), HumanBytes(s.bytes_uploaded()).c_str(),
              s.name_updated ? "" : " (already up to date)");
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
