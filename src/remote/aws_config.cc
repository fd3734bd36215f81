// Endpoint, region and credentials from options, environment and ~/.aws.
#include "remote/aws_config.h"

#include <fcntl.h>

#include <cstdlib>
#include <vector>

namespace pagewise::remote {
namespace {

std::string Trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r')) --b;
  return s.substr(a, b - a);
}

std::string Get(const EnvLookup& env, const std::string& name) {
  std::string v;
  if (env && env(name, &v)) return v;
  return "";
}

// Reads a small text file; a missing file is an empty result (found=false).
Result<std::string> ReadSmallFile(Env* fs, const std::string& path, bool* found) {
  *found = false;
  Result<int> fd = fs->Open(path, O_RDONLY | O_CLOEXEC);
  if (!fd.ok()) {
    if (fd.status().code() == Code::kNotFound) return std::string();
    return fd.status().WithContext("reading " + path);
  }
  *found = true;
  std::string text;
  Result<uint64_t> size = fs->FileSize(*fd);
  Status s = size.ok() ? Status::Ok() : size.status();
  if (s.ok() && *size > (1u << 20)) s = Status::InvalidArgument(path + " is over 1 MiB");
  if (s.ok()) {
    text.resize(*size);
    s = ReadFully(fs, *fd, text.data(), text.size(), 0);
  }
  fs->Close(*fd).IgnoreError();  // read-only
  if (!s.ok()) return s.WithContext("reading " + path);
  return text;
}

std::string HomeDir(const EnvLookup& env) { return Get(env, "HOME"); }

}  // namespace

EnvLookup ProcessEnvironment() {
  return [](const std::string& name, std::string* value) {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return false;
    *value = v;
    return true;
  };
}

IniFile ParseIni(const std::string& text) {
  IniFile ini;
  std::string section;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = Trim(text.substr(pos, nl - pos));
    pos = nl + 1;
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = Trim(line.substr(1, line.size() - 2));
      ini[section];
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string::npos || section.empty()) continue;
    std::string key = Trim(line.substr(0, eq));
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    ini[section][key] = Trim(line.substr(eq + 1));
  }
  return ini;
}

std::string DefaultCacheDir(const EnvLookup& env) {
  std::string dir = Get(env, "PAGEWISE_CACHE_DIR");
  if (!dir.empty()) return dir;
  dir = Get(env, "XDG_CACHE_HOME");
  if (!dir.empty()) return dir + "/pagewise";
  const std::string home = HomeDir(env);
  return (home.empty() ? std::string("/tmp") : home + "/.cache") + "/pagewise";
}

uint64_t DefaultCacheBytes(const EnvLookup& env) {
  const std::string v = Get(env, "PAGEWISE_CACHE_BYTES");
  if (!v.empty()) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
    if (end != nullptr && *end == '\0' && n > 0) return n;
  }
  return 10ull << 30;
}

std::chrono::nanoseconds DefaultTimeout(const EnvLookup& env) {
  const std::string v = Get(env, "PAGEWISE_REMOTE_TIMEOUT_MS");
  if (!v.empty()) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
    if (end != nullptr && *end == '\0' && n > 0) return std::chrono::milliseconds(n);
  }
  return std::chrono::seconds(30);
}

// Longer than our ~80 lines: the precedence of every setting (option, then
// environment, then the AWS files) reads best as one list.
Result<S3Config> ResolveS3Config(const RemoteOptions& options, const EnvLookup& env, Env* fs) {
  if (fs == nullptr) fs = Env::Default();
  S3Config c;
  const std::string env_profile = Get(env, "AWS_PROFILE");
  const bool named = !options.profile.empty() || !env_profile.empty();
  c.profile =
      !options.profile.empty() ? options.profile : (!env_profile.empty() ? env_profile : "default");
  const std::string home = HomeDir(env);
  std::string cred_path = Get(env, "AWS_SHARED_CREDENTIALS_FILE");
  if (cred_path.empty() && !home.empty()) cred_path = home + "/.aws/credentials";
  std::string conf_path = Get(env, "AWS_CONFIG_FILE");
  if (conf_path.empty() && !home.empty()) conf_path = home + "/.aws/config";

  bool cred_found = false, conf_found = false;
  IniFile creds_ini, conf_ini;
  if (!cred_path.empty()) {
    PW_ASSIGN_OR_RETURN(std::string t, ReadSmallFile(fs, cred_path, &cred_found));
    creds_ini = ParseIni(t);
  }
  if (!conf_path.empty()) {
    PW_ASSIGN_OR_RETURN(std::string t, ReadSmallFile(fs, conf_path, &conf_found));
    conf_ini = ParseIni(t);
  }
  const auto cred_sec = creds_ini.find(c.profile);
  const auto conf_sec =
      conf_ini.find(c.profile == "default" ? std::string("default") : "profile " + c.profile);
  const std::map<std::string, std::string> empty;
  const auto& cred_kv = cred_sec != creds_ini.end() ? cred_sec->second : empty;
  const auto& conf_kv = conf_sec != conf_ini.end() ? conf_sec->second : empty;
  auto value = [](const std::map<std::string, std::string>& kv, const std::string& k) {
    auto it = kv.find(k);
    return it == kv.end() ? std::string() : it->second;
  };
  if (named && c.profile != "default" && cred_sec == creds_ini.end() &&
      conf_sec == conf_ini.end()) {
    return Status::InvalidArgument("AWS profile '" + c.profile + "' is defined in neither " +
                                   cred_path + " nor " + conf_path);
  }

  // Keys: environment, then the credentials file, then the config file.
  const std::string env_id = Get(env, "AWS_ACCESS_KEY_ID");
  const std::string env_secret = Get(env, "AWS_SECRET_ACCESS_KEY");
  if (!env_id.empty() || !env_secret.empty()) {
    if (env_id.empty() || env_secret.empty()) {
      return Status::InvalidArgument(
          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together (only one is set)");
    }
    c.credentials = {env_id, env_secret, Get(env, "AWS_SESSION_TOKEN")};
    c.credentials_from = "the environment (AWS_ACCESS_KEY_ID)";
  } else {
    for (const auto* kv : {&cred_kv, &conf_kv}) {
      const std::string id = value(*kv, "aws_access_key_id");
      const std::string secret = value(*kv, "aws_secret_access_key");
      if (id.empty() && secret.empty()) continue;
      const std::string file = kv == &cred_kv ? cred_path : conf_path;
      if (id.empty() || secret.empty()) {
        return Status::InvalidArgument("profile '" + c.profile + "' in " + file +
                                       " sets only one of aws_access_key_id and "
                                       "aws_secret_access_key");
      }
      c.credentials = {id, secret, value(*kv, "aws_session_token")};
      c.credentials_from = file + " [" + c.profile + "]";
      break;
    }
  }
  if (c.credentials.empty()) c.credentials_from = "none (anonymous requests)";

  c.region = options.region;
  if (c.region.empty()) c.region = Get(env, "AWS_REGION");
  if (c.region.empty()) c.region = Get(env, "AWS_DEFAULT_REGION");
  if (c.region.empty()) c.region = value(conf_kv, "region");
  if (c.region.empty()) c.region = "us-east-1";

  std::string endpoint = options.endpoint;
  if (endpoint.empty()) endpoint = Get(env, "AWS_ENDPOINT_URL_S3");
  if (endpoint.empty()) endpoint = Get(env, "AWS_ENDPOINT_URL");
  if (endpoint.empty()) endpoint = value(conf_kv, "endpoint_url");
  if (endpoint.empty()) {
    endpoint = "https://s3." + c.region + ".amazonaws.com";
    c.path_style = false;  // AWS: virtual-hosted buckets
  }
  PW_ASSIGN_OR_RETURN(c.endpoint, ParseEndpoint(endpoint));
  if (!c.endpoint.https && !c.endpoint.local && !options.allow_http) {
    return Status::InvalidArgument("S3 endpoint " + c.endpoint.base +
                                   " is plain http on another host: requests and data would "
                                   "travel unencrypted; use https, or allow it explicitly "
                                   "(--allow-http, RemoteOptions::allow_http)");
  }
  return c;
}

}  // namespace pagewise::remote
