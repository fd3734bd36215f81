// Command-line options shared by the commands that reach object storage
// (push, pull, bench remote): --endpoint, --profile, --region,
// --allow-http, --connections, --timeout-ms.
//
// Thread safety: filled by CLI11 while parsing, read by the command after.
#ifndef PAGEWISE_CLI_REMOTE_FLAGS_H_
#define PAGEWISE_CLI_REMOTE_FLAGS_H_

#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "pagewise/remote_options.h"

namespace pagewise::cli {

struct RemoteFlags {
  RemoteOptions options;
  int64_t timeout_ms = 0;
  // The options with the flags applied.
  RemoteOptions Get() const {
    RemoteOptions o = options;
    if (timeout_ms > 0) o.timeout = std::chrono::milliseconds(timeout_ms);
    return o;
  }
};

inline void AddRemoteFlags(CLI::App* app, RemoteFlags* f) {
  app->add_option("--endpoint", f->options.endpoint,
                  "S3 endpoint URL (default: AWS_ENDPOINT_URL or the profile's endpoint_url)");
  app->add_option("--profile", f->options.profile, "AWS profile (default: AWS_PROFILE)");
  app->add_option("--region", f->options.region, "S3 region (default: AWS_REGION, the profile)");
  app->add_flag("--allow-http", f->options.allow_http,
                "Allow plain http to an endpoint that is not on this host");
  app->add_option("--connections", f->options.connections, "Parallel connections (1-64)")
      ->check(CLI::Range(1, 64));
  app->add_option("--timeout-ms", f->timeout_ms,
                  "Time one object may take, retries included (default 30000)");
}

}  // namespace pagewise::cli

#endif  // PAGEWISE_CLI_REMOTE_FLAGS_H_
