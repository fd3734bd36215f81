// RgwServer: a throw-away S3 server (Ceph RADOS Gateway, scripts/rgw.sh)
// for `pagewise bench remote` and the S3 tests: started in a fresh
// temporary directory on ports nobody else uses, stopped and removed with
// the object.
//
// The script is PAGEWISE_RGW_SCRIPT if set, else scripts/rgw.sh of the
// source tree this binary was built from. Ports: a random base in
// [20000, 60000) (three consecutive ports: gateway, monitor v2, v1); a busy
// port makes the script exit 75 and Start() tries another base.
//
// Thread safety: one owner; the gateway methods must not race each other.
#ifndef PAGEWISE_BENCH_RGW_SERVER_H_
#define PAGEWISE_BENCH_RGW_SERVER_H_

#include <memory>
#include <string>

#include "pagewise/status.h"

namespace pagewise::bench {

class RgwServer {
 public:
  // Starts the cluster (a few seconds). Errors: the script is missing, the
  // Ceph packages are not installed (scripts/install-deps.sh), start-up failed
  // (the script's output is in the message).
  static Result<std::unique_ptr<RgwServer>> Start();
  // Stops every daemon it started and removes its directory.
  ~RgwServer();
  RgwServer(const RgwServer&) = delete;
  RgwServer& operator=(const RgwServer&) = delete;

  const std::string& endpoint() const { return endpoint_; }  // "http://127.0.0.1:PORT"
  const std::string& access_key() const { return access_key_; }
  const std::string& secret_key() const { return secret_key_; }
  const std::string& dir() const { return dir_; }

  // Stops / restarts only the gateway (the objects stay): an S3 outage.
  Status StopGateway();
  Status StartGateway();

  // Sets AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
  // AWS_REGION in this process's environment (inherited by children).
  void ExportEnvironment() const;

 private:
  RgwServer() = default;
  std::string script_, dir_, endpoint_, access_key_, secret_key_;
};

}  // namespace pagewise::bench

#endif  // PAGEWISE_BENCH_RGW_SERVER_H_
