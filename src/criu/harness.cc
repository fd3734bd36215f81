// CRIU runs for tests and benchmarks (see harness.h).
#include "criu/harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>  // geteuid

#include <cerrno>
#include <cstdlib>
#include <tuple>
#include <utility>

#include "criu/dump.h"
#include "sys/process.h"

namespace pagewise::criu {
namespace {

const char* kHowToGet =
    "CRIU 4.1 or newer is needed (Debian 12's 3.17 fails on Linux 6.18's vDSO layout): install "
    "a current criu on PATH, or build CRIU 4.1+ from its source and set "
    "PAGEWISE_CRIU=/path/to/criu";

// "Version: 4.2" -> {4, 2}.
bool ParseVersion(const std::string& text, int* major, int* minor, std::string* v) {
  const size_t at = text.find("Version:");
  if (at == std::string::npos) return false;
  size_t p = at + 8;
  while (p < text.size() && text[p] == ' ') ++p;
  const size_t end = text.find_first_of(" \n", p);
  *v = text.substr(p, end == std::string::npos ? std::string::npos : end - p);
  return std::sscanf(v->c_str(), "%d.%d", major, minor) == 2;
}

Result<CriuBinary> Probe(const std::string& path) {
  // In a private directory of our own (mkdtemp): a predictable name in
  // /tmp could be a link planted by another user, and we may be root.
  PW_ASSIGN_OR_RETURN(const std::string dir, sys::MakeTempDir("/tmp/pagewise-criu-version-"));
  const std::string out = dir + "/out";
  sys::SpawnOptions so;
  so.stdout_path = out;
  so.stderr_path = out;
  so.append_output = false;
  Result<pid_t> pid = sys::Spawn({path, "--version"}, so);
  if (!pid.ok()) {
    sys::RemoveFile(out).IgnoreError();  // scratch
    sys::RemoveEmptyDir(dir).IgnoreError();
    return pid.status();
  }
  PW_ASSIGN_OR_RETURN(int st, sys::WaitPid(*pid));
  std::string text;
  Result<int> fd = sys::OpenFd(out, O_RDONLY);
  if (fd.ok()) {
    char buf[512];
    Result<size_t> n = sys::ReadSome(*fd, buf, sizeof(buf));
    if (n.ok()) text.assign(buf, *n);
    sys::CloseFd(*fd).IgnoreError();
  }
  sys::RemoveFile(out).IgnoreError();  // scratch file
  sys::RemoveEmptyDir(dir).IgnoreError();
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    return Status::NotFound(path + " --version: " + sys::DescribeWaitStatus(st));
  }
  int major = 0, minor = 0;
  CriuBinary b;
  b.path = path;
  if (!ParseVersion(text, &major, &minor, &b.version)) {
    return Status::NotFound(path + " --version printed no version");
  }
  if (major < 4 || (major == 4 && minor < 1)) {
    return Status::NotFound(path + " is CRIU " + b.version + ", too old");
  }
  return b;
}

}  // namespace

Result<CriuBinary> FindCriu() {
  if (geteuid() != 0) {
    return Status(Code::kPermissionDenied, 0, "CRIU dumps and restores need root");
  }
  Result<CriuBinary> on_path = Probe("criu");
  if (on_path.ok()) return on_path;
  const char* env = std::getenv("PAGEWISE_CRIU");
  if (env != nullptr && *env) {
    Result<CriuBinary> b = Probe(env);
    if (b.ok()) return b;
    return Status::NotFound("PAGEWISE_CRIU=" + std::string(env) + ": " + b.status().message() +
                            ". " + kHowToGet);
  }
  return Status::NotFound("no usable criu (" + on_path.status().message() + "). " + kHowToGet);
}

Harness::Harness(CriuBinary criu, std::string dir) : criu_(std::move(criu)), dir_(std::move(dir)) {
  sys::BecomeSubreaper().IgnoreError();  // without it Restore's programs go to init
}

Harness::~Harness() {
  for (pid_t pid : children_) {
    // Cleanup of what a failed test left running.
    sys::KillProcess(pid, SIGKILL).IgnoreError();
    sys::WaitPid(pid).status().IgnoreError();
  }
}

Result<pid_t> Harness::StartProgram(std::vector<std::string> argv, int ready_count) {
  const std::string fifo = dir_ + "/ready." + std::to_string(serial_++);
  PW_RETURN_IF_ERROR(sys::MakeFifo(fifo));
  // O_RDWR: never blocks, and never sees end of file while we hold it.
  PW_ASSIGN_OR_RETURN(int rd, sys::OpenFd(fifo, O_RDWR));
  for (std::string& a : argv) {
    if (a == "{READY}") a = fifo;
  }
  sys::SpawnOptions so;
  so.new_session = true;
  so.stderr_path = dir_ + "/program.err";
  so.append_output = true;
  Result<pid_t> pid = sys::Spawn(argv, so);
  if (!pid.ok()) {
    sys::CloseFd(rd).IgnoreError();
    return pid.status();
  }
  children_.push_back(*pid);
  // Wait for the bytes, or for the program to die first (pidfd).
  Result<int> pidfd = sys::PidfdOpen(*pid);
  Status st = pidfd.status();
  int got = 0;
  while (st.ok() && got < ready_count) {
    struct pollfd p[2] = {{rd, POLLIN, 0}, {*pidfd, POLLIN, 0}};
    Result<int> n = Env::Default()->Poll(p, 2, -1);
    if (!n.ok()) {
      st = n.status();
      break;
    }
    if (p[0].revents & POLLIN) {
      char buf[16];
      Result<size_t> r = sys::ReadSome(rd, buf, static_cast<size_t>(ready_count - got));
      if (!r.ok()) st = r.status();
      if (r.ok()) got += static_cast<int>(*r);
    } else if (p[1].revents & POLLIN) {
      st = Status::PeerGone(argv[0] + " exited before it was ready (see " + dir_ + "/program.err)");
    }
  }
  if (pidfd.ok()) sys::CloseFd(*pidfd).IgnoreError();
  sys::CloseFd(rd).IgnoreError();
  sys::RemoveFile(fifo).IgnoreError();  // scratch FIFO
  if (!st.ok()) return st;
  return *pid;
}

Status Harness::RunCriu(const std::vector<std::string>& args, const std::string& log,
                        const std::vector<std::string>& prefix) {
  std::vector<std::string> argv = prefix;
  argv.push_back(criu_.path);
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"-o", log, "-v4"});
  sys::SpawnOptions so;
  so.stderr_path = dir_ + "/criu.err";
  so.append_output = true;
  PW_ASSIGN_OR_RETURN(pid_t pid, sys::Spawn(argv, so));
  PW_ASSIGN_OR_RETURN(int st, sys::WaitPid(pid));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    return Status::IoError("criu " + args[0] + ": " + sys::DescribeWaitStatus(st) + " (see " + log +
                           ")");
  }
  return Status::Ok();
}

Status Harness::Dump(pid_t pid, const std::string& dump_dir,
                     const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"dump", "-t", std::to_string(pid), "-D", dump_dir};
  args.insert(args.end(), extra.begin(), extra.end());
  PW_RETURN_IF_ERROR(RunCriu(args, dump_dir + "/dump.log"));
  CriuDump::OpenOptions oo;
  oo.data = false;
  PW_ASSIGN_OR_RETURN(std::shared_ptr<CriuDump> d, CriuDump::Open(dump_dir, oo));
  // CRIU restores the same pids: wait until every dumped task is gone.
  // The root is our child; its children are reparented to us (subreaper)
  // or to init as they die.
  for (const DumpTask& t : d->tasks()) {
    const pid_t p = static_cast<pid_t>(t.pid);
    for (;;) {
      Result<int> w = sys::WaitPid(p);
      if (w.ok()) break;
      Result<int> pidfd = sys::PidfdOpen(p);
      if (!pidfd.ok()) break;  // ESRCH: gone
      Result<bool> exited = sys::WaitPidfd(*pidfd, -1);
      sys::CloseFd(*pidfd).IgnoreError();
      if (!exited.ok()) return exited.status();
      if (!sys::ProcessExists(p)) break;
    }
    for (size_t i = 0; i < children_.size(); ++i) {
      if (children_[i] == p) children_.erase(children_.begin() + static_cast<ptrdiff_t>(i));
    }
  }
  return Status::Ok();
}

Result<Child> Harness::StartDaemon(std::vector<std::string> argv, const std::string& name) {
  int fds[2];
  PW_RETURN_IF_ERROR(sys::MakePipe(fds));
  argv.insert(argv.end(), {"--status-fd", "3"});
  sys::SpawnOptions so;
  so.stdout_path = dir_ + "/" + name + ".out";
  so.stderr_path = dir_ + "/" + name + ".err";
  so.pass_fd = fds[1];
  Result<pid_t> pid = sys::Spawn(argv, so);
  sys::CloseFd(fds[1]).IgnoreError();
  if (!pid.ok()) {
    sys::CloseFd(fds[0]).IgnoreError();
    return pid.status();
  }
  children_.push_back(*pid);
  char b = 1;
  Result<size_t> n = sys::ReadSome(fds[0], &b, 1);
  sys::CloseFd(fds[0]).IgnoreError();
  if (!n.ok() || *n != 1) {
    return Status::PeerGone(
        name + " exited before it was listening: " + ReadText(dir_ + "/" + name + ".err"));
  }
  return Child{*pid, name};
}

Status Harness::Restore(const std::string& dump_dir, bool lazy,
                        const std::vector<std::string>& extra,
                        const std::vector<std::string>& prefix) {
  std::vector<std::string> args = {"restore", "-D", dump_dir, "-d"};
  if (lazy) args.push_back("--lazy-pages");
  args.insert(args.end(), extra.begin(), extra.end());
  const std::string log = dump_dir + "/restore." + std::to_string(serial_++) + ".log";
  Status st = RunCriu(args, log, prefix);
  if (st.ok()) {
    CriuDump::OpenOptions oo;
    oo.data = false;
    Result<std::shared_ptr<CriuDump>> d = CriuDump::Open(dump_dir, oo);
    if (d.ok() && !(*d)->tasks().empty())
      children_.push_back(static_cast<pid_t>((*d)->tasks()[0].pid));
  }
  return st;
}

Result<int> Harness::Wait(pid_t pid) {
  PW_ASSIGN_OR_RETURN(int st, sys::WaitPid(pid));
  for (size_t i = 0; i < children_.size(); ++i) {
    if (children_[i] == pid) children_.erase(children_.begin() + static_cast<ptrdiff_t>(i));
  }
  return st;
}

Status Harness::SignalGroup(pid_t pgid, int sig) { return sys::KillGroup(pgid, sig); }

std::string Harness::ReadText(const std::string& path) const {
  Result<int> fd = sys::OpenFd(path, O_RDONLY);
  if (!fd.ok()) return "";
  std::string out;
  char buf[65536];
  for (;;) {
    Result<size_t> n = sys::ReadSome(*fd, buf, sizeof(buf));
    if (!n.ok() || *n == 0) break;
    out.append(buf, *n);
  }
  sys::CloseFd(*fd).IgnoreError();
  return out;
}

}  // namespace pagewise::criu

namespace pagewise::criu {

Status RunCommand(const std::vector<std::string>& argv) {
  PW_ASSIGN_OR_RETURN(pid_t pid, sys::Spawn(argv));
  PW_ASSIGN_OR_RETURN(int st, sys::WaitPid(pid));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::string cmd;
    for (const std::string& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    return Status::IoError("`" + cmd + "`: " + sys::DescribeWaitStatus(st));
  }
  return Status::Ok();
}

Result<std::unique_ptr<NetnsPair>> NetnsPair::Create(const std::string& tag) {
  if (tag.empty() || tag.size() > 8) return Status::InvalidArgument("netns tag: 1..8 characters");
  std::unique_ptr<NetnsPair> n(new NetnsPair());
  unsigned h = 0;
  for (char c : tag) h = h * 31 + static_cast<unsigned char>(c);
  const std::string net = "10.213." + std::to_string(h % 250 + 1) + ".";
  n->server_ns_ = "pwcriu-" + tag + "-srv";
  n->client_ns_ = "pwcriu-" + tag + "-cli";
  n->server_veth_ = "pwc" + tag + "s";
  n->client_veth_ = "pwc" + tag + "c";
  n->server_ip_ = net + "1";
  n->client_ip_ = net + "2";
  PW_RETURN_IF_ERROR(RunCommand({"ip", "netns", "add", n->server_ns_}));
  n->created_server_ = true;
  PW_RETURN_IF_ERROR(RunCommand({"ip", "netns", "add", n->client_ns_}));
  n->created_client_ = true;
  PW_RETURN_IF_ERROR(RunCommand({"ip", "-n", n->server_ns_, "link", "add", n->server_veth_, "type",
                                 "veth", "peer", "name", n->client_veth_, "netns", n->client_ns_}));
  for (const auto& [ns, dev, ip] : {std::tuple{n->server_ns_, n->server_veth_, n->server_ip_},
                                    std::tuple{n->client_ns_, n->client_veth_, n->client_ip_}}) {
    PW_RETURN_IF_ERROR(RunCommand({"ip", "-n", ns, "addr", "add", ip + "/24", "dev", dev}));
    PW_RETURN_IF_ERROR(RunCommand({"ip", "-n", ns, "link", "set", dev, "up"}));
    PW_RETURN_IF_ERROR(RunCommand({"ip", "-n", ns, "link", "set", "lo", "up"}));
  }
  return n;
}

NetnsPair::~NetnsPair() {
  // Deleting a namespace deletes the veth end inside it (and so the pair).
  if (created_server_) RunCommand({"ip", "netns", "delete", server_ns_}).IgnoreError();
  if (created_client_) RunCommand({"ip", "netns", "delete", client_ns_}).IgnoreError();
}

std::vector<std::string> NetnsPair::InServer(const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", server_ns_};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::vector<std::string> NetnsPair::InClient(const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", client_ns_};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

Status NetnsPair::SetLink(bool up) {
  return RunCommand({"ip", "-n", server_ns_, "link", "set", server_veth_, up ? "up" : "down"});
}

}  // namespace pagewise::criu
