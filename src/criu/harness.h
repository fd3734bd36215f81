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
  Status Restore(const std::string& dump_dir, bool lazy,
                 const std::vector<std::string>& extra = {});
  // Waits for a child (a program restored under us, or a daemon). Returns
  // its wait status.
  Result<int> Wait(pid_t pid);
  // Sends sig to the process group pgid.
  Status SignalGroup(pid_t pgid, int sig);
  // A file's text (daemon output, logs); "" if missing.
  std::string ReadText(const std::string& path) const;
  std::string LogPath(const std::string& name) const { return dir_ + "/" + name; }

 private:
  Status RunCriu(const std::vector<std::string>& args, const std::string& log);
  CriuBinary criu_;
  std::string dir_;
  std::vector<pid_t> children_;
  int serial_ = 0;
};

}  // namespace pagewise::criu

#endif  // PAGEWISE_CRIU_HARNESS_H_
