// `pagewise pull s3://BUCKET/NAME IMAGE`: downloads an image chain from
// object storage: the top layer at IMAGE, parents as IMAGE.parent-N.
#include <cstdio>
#include <iostream>
#include <memory>

#include "command.h"
#include "image_util.h"
#include "pagewise/remote.h"
#include "remote_flags.h"

namespace pagewise::cli {
namespace {

struct PullArgs {
  std::string url, image;
  RemoteFlags remote;
  bool json = false;
};

CommandRegistration reg(
    "pull", "Download an image chain from S3 (s3://BUCKET/NAME) to local files",
    [](CLI::App* app) -> RunFn {
      auto a = std::make_shared<PullArgs>();
      app->add_option("URL", a->url, "Source s3://BUCKET/NAME")->required();
      app->add_option("IMAGE", a->image, "Local image to write (parents beside it)")->required();
      AddRemoteFlags(app, &a->remote);
      app->add_flag("--json", a->json, "Print the result as JSON");
      return [a]() -> int {
        PullOptions o;
        o.remote = a->remote.Get();
        Result<PullStats> r = [&] {
          ProgressLine progress("pull " + a->url);
          o.progress = progress.Fn();
          return PullImage(a->url, a->image, o);
        }();
        if (!r.ok()) return Fail("pull", r.status());
        if (a->json) {
          std::cout << nlohmann::json{{"url", a->url},
                                      {"files", r->files},
                                      {"bytes", r->bytes},
                                      {"chunks_fetched", r->chunks_fetched},
                                      {"chunks_cached", r->chunks_cached},
                                      {"chunks_from_peer", r->chunks_from_peer}}
                           .dump(2)
                    << std::endl;
        } else {
          std::printf("%s -> %s: %zu layer file(s), %s\n", a->url.c_str(), a->image.c_str(),
                      r->files.size(), HumanBytes(r->bytes).c_str());
        }
        return 0;
      };
    });

}  // namespace
}  // namespace pagewise::cli
