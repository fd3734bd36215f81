// `pagewise bench criu [--json FILE] [--scale S]`: one CRIU dump of a
// 1 GiB (x scale) multi-threaded workload (tests/criu_workload.cc, 4
// threads), restored in the same run by:
//   criu_restore     plain eager `criu restore`
//   criu_lazy_pages  `criu restore --lazy-pages` beside CRIU's own daemon
//   pagewise         ... beside `pagewise criu lazy-pages`
//   pagewise_tcp     ... beside `pagewise criu lazy-pages --page-server`,
//                    the pages served by `pagewise criu page-server` in
//                    another network namespace (a veth link)
// Each restored program then reads every page of its heap from all its
// threads in random order (the heavy reader), timing each first touch,
// and checks every byte; a wrong byte fails the benchmark.
// Metrics: running_ms (restore started -> criu restore returned, the
// program running), heavy_reader_ms (go signal -> every page read),
// fault_p99_us (p99 of the first-touch times the program measured),
// resident_ms (restore started -> the lazy daemon exited with everything
// in place; for criu_restore: running_ms). Needs root and CRIU 4.1+.
// --subjects restores with some subjects only (a quicker run while working
// on one of them); rows whose baseline did not run are left out.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench.h"
#include "criu/harness.h"
#include "sys/process.h"

namespace pagewise::bench {
namespace {

using criu::Harness;

struct Run {
  double running_ms = 0, heavy_reader_ms = 0, fault_p99_us = 0, resident_ms = 0;
  double bad_words = 0;  // words the restored program found wrong
};

std::map<std::string, double> ParseReport(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string k;
  double v;
  while (in >> k >> v) out[k] = v;
  return out;
}

double Ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

class CriuBench {
 public:
  CriuBench(Harness* h, std::string dump, pid_t pid, std::string cli, std::string workdir)
      : h_(h), dump_(std::move(dump)), pid_(pid), cli_(std::move(cli)), dir_(std::move(workdir)) {}

  // One restore of the dump by `subject`; the program's verdict checked.
  Result<Run> Restore(const std::string& subject, criu::NetnsPair* net) {
    std::vector<std::string> daemon;
    std::vector<std::string> prefix;
    std::unique_ptr<criu::Child> server;
    const std::string report = dir_ + "/report." + subject;
    if (subject == "criu_lazy_pages") {
      daemon = {h_->criu().path, "lazy-pages", "-D", dump_, "-o", dump_ + "/lazy.log"};
    } else if (subject == "pagewise") {
      daemon = {cli_, "criu", "lazy-pages", "-D", dump_, "--quiet"};
    } else if (subject == "pagewise_tcp") {
      const std::string addr = net->server_ip() + ":7913";
      PW_ASSIGN_OR_RETURN(criu::Child s,
                          h_->StartDaemon(net->InServer({cli_, "criu", "page-server", "--tcp", addr,
                                                         "--criu-dir", dump_, "--quiet"}),
                                          "server"));
      server = std::make_unique<criu::Child>(s);
      daemon = net->InClient(
          {cli_, "criu", "lazy-pages", "-D", dump_, "--page-server", addr, "--quiet"});
      prefix = net->InClient({});
    }
    std::unique_ptr<criu::Child> d;
    if (!daemon.empty()) {
      PW_ASSIGN_OR_RETURN(criu::Child c, h_->StartDaemon(daemon, subject));
      d = std::make_unique<criu::Child>(c);
    }
    Run r;
    const auto t0 = std::chrono::steady_clock::now();
    Status st = h_->Restore(dump_, d != nullptr, {}, prefix);
    const auto t_run = std::chrono::steady_clock::now();
    r.running_ms = Ms(t0, t_run);
    if (!st.ok())
      return st.WithContext(subject + ": " + h_->ReadText(dir_ + "/" + subject + ".err"));
    // The program reads its report path from the dump (argv): it is the
    // same file for every subject, so clear it first.
    sys::RemoveFile(report_path_).IgnoreError();
    PW_RETURN_IF_ERROR(h_->SignalGroup(pid_, SIGUSR1));
    auto t_resident = t_run;
    if (d) {
      PW_ASSIGN_OR_RETURN(int dw, h_->Wait(d->pid));
      t_resident = std::chrono::steady_clock::now();
      if (!WIFEXITED(dw) || WEXITSTATUS(dw) != 0) {
        return Status::IoError(subject + " daemon: " + sys::DescribeWaitStatus(dw) + " " +
                               h_->ReadText(dir_ + "/" + subject + ".err"));
      }
    }
    PW_ASSIGN_OR_RETURN(int w, h_->Wait(pid_));
    const bool exact = WIFEXITED(w) && WEXITSTATUS(w) == 0;
    // pagewise must restore every byte; a baseline that does not is
    // reported (CRIU's own daemon was seen serving zeros under this load).
    if (!exact && subject.rfind("pagewise", 0) == 0) {
      return Status::Corruption(subject + ": the restored program failed its byte check (" +
                                sys::DescribeWaitStatus(w) +
                                "): " + h_->ReadText(dir_ + "/program.err"));
    }
    if (!exact && !(WIFEXITED(w) && WEXITSTATUS(w) == 1)) {
      return Status::IoError(subject + ": the restored program " + sys::DescribeWaitStatus(w));
    }
    r.resident_ms = Ms(t0, t_resident);
    if (server) {
      sys::KillProcess(server->pid, SIGTERM).IgnoreError();  // it exits on SIGTERM
      h_->Wait(server->pid).status().IgnoreError();
    }
    std::map<std::string, double> rep = ParseReport(h_->ReadText(report_path_));
    if (!rep.count("heavy_reader_us")) return Status::IoError(subject + ": no program report");
    r.heavy_reader_ms = rep["heavy_reader_us"] / 1000;
    r.fault_p99_us = rep["fault_p99_us"];
    r.bad_words = rep["bad"];
    if (r.bad_words > 0) {
      std::fprintf(stderr,
                   "bench criu: %s: the restored program found %.0f wrong words (of %zu pages "
                   "read): this baseline served wrong memory\n",
                   subject.c_str(), r.bad_words, static_cast<size_t>(rep["pages_read"]));
    }
    return r;
  }

  void set_report_path(const std::string& p) { report_path_ = p; }

 private:
  Harness* h_;
  std::string dump_;
  pid_t pid_;
  std::string cli_, dir_, report_path_;
};

Status RunCriuBench(const BenchOptions& opts, BenchReport* report) {
  PW_ASSIGN_OR_RETURN(criu::CriuBinary criu, criu::FindCriu());
  PW_ASSIGN_OR_RETURN(std::string bin, sys::SelfExeDir());
  const std::string cli = bin + "/pagewise", workload = bin + "/criu_workload";
  PW_ASSIGN_OR_RETURN(const std::string dir, sys::MakeTempDir("/tmp/pagewise-bench-criu-"));
  const std::string dump = dir + "/dump";
  struct Cleanup {
    std::string d;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);  // best effort: a scratch directory
    }
  } cleanup{dir};
  std::filesystem::create_directories(dump);
  const size_t mib = std::max<size_t>(8, static_cast<size_t>(1024 * opts.scale));
  Harness h(criu, dir);
  const std::string report_path = dir + "/program.report";
  Progress(opts, "criu: starting a " + std::to_string(mib) + " MiB workload");
  PW_ASSIGN_OR_RETURN(pid_t pid,
                      h.StartProgram({workload, "--mib", std::to_string(mib), "--threads", "4",
                                      "--heavy", "--report", report_path, "--ready", "{READY}"}));
  Progress(opts, "criu: dumping");
  PW_RETURN_IF_ERROR(h.Dump(pid, dump));
  PW_ASSIGN_OR_RETURN(std::unique_ptr<criu::NetnsPair> net,
                      criu::NetnsPair::Create(std::to_string(sys::SelfPid() % 100000)));
  CriuBench b(&h, dump, pid, cli, dir);
  b.set_report_path(report_path);
  // The first restore reads the dump into the page cache for all others.
  std::map<std::string, Run> runs;
  for (const char* s : {"criu_restore", "criu_lazy_pages", "pagewise", "pagewise_tcp"}) {
    if (!opts.subjects.empty() &&
        std::find(opts.subjects.begin(), opts.subjects.end(), s) == opts.subjects.end()) {
      continue;
    }
    Progress(opts, std::string("criu: restoring with ") + s);
    PW_ASSIGN_OR_RETURN(runs[s], b.Restore(s, net.get()));
  }
  // A row only when both its subject and its baseline ran in this run.
  auto add = [&](const std::string& s, const char* metric, double Run::*field, const char* unit,
                 const std::string& base) {
    if (!runs.count(s) || !runs.count(base)) return;
    report->Add({s, metric, runs[s].*field, unit, base, runs[base].*field});
  };
  add("criu_lazy_pages", "wrong_words", &Run::bad_words, "words", "pagewise");
  for (const char* s : {"pagewise", "pagewise_tcp"}) {
    add(s, "running_ms", &Run::running_ms, "ms", "criu_lazy_pages");
    add(s, "heavy_reader_ms", &Run::heavy_reader_ms, "ms", "criu_lazy_pages");
    add(s, "fault_p99_us", &Run::fault_p99_us, "us", "criu_lazy_pages");
    add(s, "resident_ms", &Run::resident_ms, "ms", "criu_lazy_pages");
    add(s, "resident_ms", &Run::resident_ms, "ms", "criu_restore");
  }
  return Status::Ok();
}

BenchRegistration reg("criu",
                      "CRIU lazy restore of a 1 GiB multi-threaded program: pagewise (local and "
                      "over TCP) vs CRIU's lazy-pages daemon and eager restore",
                      RunCriuBench);

}  // namespace
}  // namespace pagewise::bench
