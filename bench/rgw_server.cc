// RgwServer: runs scripts/rgw.sh through popen and parses what it prints.
#include "rgw_server.h"

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "sys/process.h"

namespace pagewise::bench {
namespace {

struct Output {
  int status = -1;  // exit status, -1 if it did not exit normally
  std::string text;
};

// Runs `cmd` with stderr folded into stdout; returns its exit status and output.
Output Run(const std::string& cmd) {
  Output o;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return o;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) o.text.append(buf, n);
  const int st = pclose(p);
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string Value(const std::string& text, const std::string& key) {
  const std::string k = key + "=";
  size_t pos = 0;
  while ((pos = text.find(k, pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      const size_t end = text.find('\n', pos);
      return text.substr(pos + k.size(), end == std::string::npos ? end : end - pos - k.size());
    }
    pos += k.size();
  }
  return "";
}

std::string ScriptPath() {
  if (const char* s = std::getenv("PAGEWISE_RGW_SCRIPT")) return s;
#ifdef PAGEWISE_SOURCE_DIR
  return std::string(PAGEWISE_SOURCE_DIR) + "/scripts/rgw.sh";
#else
  return "scripts/rgw.sh";
#endif
}

// The lowest port the kernel hands out to outgoing connections
// (/proc/sys/net/ipv4/ip_local_port_range; 32768 if unreadable). A port at
// or above it can be taken at any moment by some other test's connect(2),
// which the script's "is anyone listening" check cannot see.
int EphemeralLow() {
  std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
  int lo = 0;
  if (!(f >> lo) || lo <= 0) lo = 32768;
  return lo;
}

}  // namespace

Result<std::unique_ptr<RgwServer>> RgwServer::Start() {
  std::unique_ptr<RgwServer> s(new RgwServer());
  s->script_ = ScriptPath();
  std::error_code ec;
  if (!std::filesystem::exists(s->script_, ec)) {
    return Status::NotFound("the S3 test server script " + s->script_ +
                            " is missing (set PAGEWISE_RGW_SCRIPT to scripts/rgw.sh)");
  }
  PW_ASSIGN_OR_RETURN(s->dir_, sys::MakeTempDir("/tmp/pagewise-rgw-"));
  std::mt19937 rng(std::random_device{}());
  Output o;
  // Three consecutive ports below the ephemeral range (from 10000 up);
  // if that range is too small, anywhere from 10000 and rely on the retry.
  const int lowest = 10000;
  const int slots = std::max(1, (std::max(EphemeralLow(), lowest + 300) - lowest - 3) / 3);
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int base = lowest + static_cast<int>(rng() % static_cast<unsigned>(slots)) * 3;
    // $PPID of popen's shell: this process (the watchdog's owner).
    o = Run("RGW_OWNER_PID=$PPID RGW_PORT=" + std::to_string(base) +
            " MON_PORT=" + std::to_string(base + 1) + " MON_V1_PORT=" + std::to_string(base + 2) +
            " bash " + Quote(s->script_) + " start " + Quote(s->dir_));
    if (o.status != 75) break;  // 75: a port was busy (listened on or bound); try others
  }
  if (o.status != 0) {
    std::string why = o.text.size() > 4000 ? o.text.substr(o.text.size() - 4000) : o.text;
    return Status::IoError("starting the S3 test server (" + s->script_ +
                           ") failed; are ceph-mon, ceph-osd and radosgw installed "
                           "(scripts/install-deps.sh)? Output:\n" +
                           why);
  }
  s->endpoint_ = Value(o.text, "S3_ENDPOINT");
  s->access_key_ = Value(o.text, "AWS_ACCESS_KEY_ID");
  s->secret_key_ = Value(o.text, "AWS_SECRET_ACCESS_KEY");
  if (s->endpoint_.empty() || s->access_key_.empty()) {
    return Status::IoError("the S3 test server script printed no endpoint: " + o.text);
  }
  return s;
}

RgwServer::~RgwServer() {
  if (dir_.empty()) return;
  if (!endpoint_.empty() || std::filesystem::exists(dir_ + "/.pagewise-rgw")) {
    Run("bash " + Quote(script_) + " stop " + Quote(dir_));
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

Status RgwServer::StopGateway() {
  Output o = Run("bash " + Quote(script_) + " gateway-stop " + Quote(dir_));
  if (o.status != 0) return Status::IoError("stopping the S3 gateway failed: " + o.text);
  return Status::Ok();
}

Status RgwServer::StartGateway() {
  Output o = Run("bash " + Quote(script_) + " gateway-start " + Quote(dir_));
  if (o.status != 0) return Status::IoError("restarting the S3 gateway failed: " + o.text);
  return Status::Ok();
}

void RgwServer::ExportEnvironment() const {
  setenv("AWS_ENDPOINT_URL", endpoint_.c_str(), 1);
  setenv("AWS_ACCESS_KEY_ID", access_key_.c_str(), 1);
  setenv("AWS_SECRET_ACCESS_KEY", secret_key_.c_str(), 1);
  setenv("AWS_REGION", "us-east-1", 1);
}

}  // namespace pagewise::bench
