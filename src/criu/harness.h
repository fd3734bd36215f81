// CRIU runs for pagewise's tests and `pagewise bench criu`: finding a
// CRIU that works on this kernel, starting a program as a user would (new
// session, standard descriptors on /dev/null), dumping it, waiting until
// it is gone, running a lazy-pages daemon (pagewise's or CRIU's own) and
// `criu restore --lazy-pages -d`, and collecting the restored program's
// exit status (the harness is a child subreaper, so the restored tree is
// reparented to it).
//
// Thread safety: one Harness per thread; it forks children and reaps
// them by pid only.
#ifndef PAGEWISE_CRIU_HARNESS_H_
#define PAGEWISE_CRIU_HARNESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::criu {

struct CriuBinary {
  std::string path;
  std::string version;  // "4.2"
};

// `criu` on PATH if it is 4.1 or newer, else $PAGEWISE_CRIU (which must be
// 4.1+). kNotFound saying how to get one; kPermissionDenied when not root.
Result<CriuBinary> FindCriu();

struct Child {
  pid_t pid = -1;
  std::string what;
};

class Harness {
 public:
  // dir: a scratch directory the harness owns (logs, FIFOs, dumps).
  Harness(CriuBinary criu, std::string dir);
  ~Harness();  // kills and reaps what is still running

  const CriuBinary& criu() const { return criu_; }
  const std::string& dir() const { return dir_; }

  // Starts argv (in a new session), which must write `ready_count` bytes
  // to the FIFO given to it as {READY} in argv (replaced here) when ready.
  // Returns its pid once all bytes arrived; kPeerGone if it died first.
  Result<pid_t> StartProgram(std::vector<std::string> argv, int ready_count = 1);
  // `criu dump -t pid -D dump_dir`, then waits until every task of the
  // tree is gone (reaped). Errors name criu's log.
  Status Dump(pid_t pid, const std::string& dump_dir, const std::vector<std::string>& extra = {});
  // Starts a lazy-pages daemon: argv gets "--status-fd 3"; returns once it
  // wrote its status byte. stdout/stderr go to files in dir().
  Result<Child> StartDaemon(std::vector<std::string> argv, const std::string& name);
  // `criu restore -D dump_dir -d [--lazy-pages]`; OK once criu says the
  // tree is restored (criu exited 0).
  // `prefix` runs criu inside something (a network namespace).
  Status Restore(const std::string& dump_dir, bool lazy, const std::vector<std::string>& extra = {},
                 const std::vector<std::string>& prefix = {});
  // Waits for a child (a program restored under us, or a daemon). Returns
  // its wait status.
  Result<int> Wait(pid_t pid);
  // Sends sig to the process group pgid.
  Status SignalGroup(pid_t pgid, int sig);
  // A file's text (daemon output, logs); "" if missing.
  std::string ReadText(const std::string& path) const;
  std::string LogPath(const std::string& name) const { return dir_ + "/" + name; }

 private:
  Status RunCriu(const std::vector<std::string>& args, const std::string& log,
                 const std::vector<std::string>& prefix = {});
  CriuBinary criu_;
  std::string dir_;
  std::vector<pid_t> children_;
  int serial_ = 0;
};

// Two network namespaces joined by a veth pair, for post-copy migration
// between "hosts" of one machine: the server side gets 10.213.N.1, the
// client side 10.213.N.2 (N from the tag), each with its loopback up.
// Names carry "pwcriu" and the tag, so runs never collide. Both
// namespaces (and so the veth pair) are deleted on destruction, whatever
// happened.
class NetnsPair {
 public:
  // tag: a short unique string (e.g. the pid), at most 8 characters.
  static Result<std::unique_ptr<NetnsPair>> Create(const std::string& tag);
  ~NetnsPair();
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  const std::string& server_ns() const { return server_ns_; }
  const std::string& client_ns() const { return client_ns_; }
  const std::string& server_ip() const { return server_ip_; }
  // argv run inside a namespace (through `ip netns exec`).
  std::vector<std::string> InServer(const std::vector<std::string>& argv) const;
  std::vector<std::string> InClient(const std::vector<std::string>& argv) const;
  // Takes the server's end of the link down (up = false) or up: a cut
  // cable, as the client sees it (its packets go nowhere, no reset).
  Status SetLink(bool up);

 private:
  NetnsPair() = default;
  std::string server_ns_, client_ns_, server_veth_, client_veth_, server_ip_, client_ip_;
  bool created_server_ = false, created_client_ = false;
};

// Runs argv to completion (output to /dev/null); OK on exit status 0.
Status RunCommand(const std::vector<std::string>& argv);

}  // namespace pagewise::criu

#endif  // PAGEWISE_CRIU_HARNESS_H_
