// Where an S3 client gets its endpoint, region and keys: RemoteOptions, the
// AWS environment variables, and the shared ~/.aws/credentials and
// ~/.aws/config files (profiles), in the order pagewise/remote_options.h
// documents.
//
// The environment is read through a lookup function so that tests can give
// their own; files are read with the Env.
//
// Thread safety: pure functions over values (the lookup must be safe to
// call from the calling thread).
#ifndef PAGEWISE_REMOTE_AWS_CONFIG_H_
#define PAGEWISE_REMOTE_AWS_CONFIG_H_

#include <functional>
#include <map>
#include <string>

#include "pagewise/remote_options.h"
#include "pagewise/status.h"
#include "remote/sigv4.h"
#include "remote/url.h"
#include "sys/env.h"

namespace pagewise::remote {

// Looks up an environment variable; nullopt-like "" with found=false.
using EnvLookup = std::function<bool(const std::string& name, std::string* value)>;
// The process environment (getenv).
EnvLookup ProcessEnvironment();

struct S3Config {
  Endpoint endpoint;
  bool path_style = true;  // bucket in the path; false: BUCKET.host (AWS)
  std::string region;
  std::string profile;
  Credentials credentials;       // empty: anonymous
  std::string credentials_from;  // "environment", "~/.aws/credentials [p]", ... (no secrets)
};

// Resolves the configuration. Errors: kInvalidArgument for a malformed
// endpoint, a plain-http endpoint off this host without allow_http, an
// access key without a secret (or the reverse), a profile named explicitly
// (option or AWS_PROFILE) that no file defines; kIoError/kCorruption from
// reading the files.
Result<S3Config> ResolveS3Config(const RemoteOptions& options, const EnvLookup& env,
                                 Env* fs = nullptr);

// INI sections of an AWS shared file: section name -> key -> value (keys
// lower-cased, values trimmed). Lines: "[name]", "key = value", comments
// starting with '#' or ';'. Exposed for tests.
using IniFile = std::map<std::string, std::map<std::string, std::string>>;
IniFile ParseIni(const std::string& text);

// The default chunk cache directory and size bound, and the per-object
// timeout, from the environment (see remote_options.h).
std::string DefaultCacheDir(const EnvLookup& env);
uint64_t DefaultCacheBytes(const EnvLookup& env);
std::chrono::nanoseconds DefaultTimeout(const EnvLookup& env);

}  // namespace pagewise::remote

#endif  // PAGEWISE_REMOTE_AWS_CONFIG_H_
