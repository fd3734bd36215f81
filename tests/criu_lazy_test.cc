// Real CRIU restores real programs lazily through `pagewise criu
// lazy-pages`: a multi-threaded program, one that forks, mremaps, drops
// (MADV_DONTNEED) and unmaps memory while it is still being restored, a
// shell pipeline, repeated restores of one dump, and bad input (wrong -D,
// unknown images version, corrupt pagemap, a task without userfaultfd).
// The programs (tests/criu_workload.cc) check every byte themselves and
// exit 0 only if all of it is exact.
//
// Needs CRIU 4.1+ (criu on PATH, or PAGEWISE_CRIU) and root; skips
// otherwise, saying how to get it (PAGEWISE_FORBID_SKIP=1 forbids that).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "criu/harness.h"
#include "criu_fixture.h"
#include "gtest/gtest.h"
#include "testing/cli_runner.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using criu::Harness;
namespace fs = std::filesystem;

class CriuLazyTest : public CriuFixture {
 protected:
  // Restores `dump` beside `pagewise criu lazy-pages daemon_args`, lets the
  // program run, and returns the daemon's JSON report. The program's and
  // the daemon's exit statuses must be 0.
  nlohmann::json LazyRestore(const std::string& dump, pid_t pid,
                             const std::vector<std::string>& daemon_args = {}) {
    std::vector<std::string> argv = {kCli, "criu", "lazy-pages", "-D", dump, "--json"};
    argv.insert(argv.end(), daemon_args.begin(), daemon_args.end());
    const std::string name = "daemon" + std::to_string(runs_++);
    Result<criu::Child> d = h_->StartDaemon(argv, name);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    if (!d.ok()) return {};
    Status st = h_->Restore(dump, true);
    EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << Text(name + ".err");
    if (st.ok()) {
      EXPECT_TRUE(h_->SignalGroup(pid, SIGUSR1).ok());
      Result<int> w = h_->Wait(pid);
      EXPECT_TRUE(w.ok()) << w.status().ToString();
      if (w.ok()) {
        EXPECT_TRUE(WIFEXITED(*w) && WEXITSTATUS(*w) == 0)
            << "restored program: status " << *w << "\n"
            << Text("program.err") << "\ndaemon:\n"
            << Text(name + ".err");
      }
    }
    Result<int> dw = h_->Wait(d->pid);
    EXPECT_TRUE(dw.ok() && WIFEXITED(*dw) && WEXITSTATUS(*dw) == 0)
        << "daemon: " << Text(name + ".err");
    const std::string out = Text(name + ".out");
    if (!nlohmann::json::accept(out)) {
      ADD_FAILURE() << "daemon printed no JSON: " << out;
      return {};
    }
    return nlohmann::json::parse(out);
  }

  int runs_ = 0;
};

uint64_t Sum(const nlohmann::json& r, const char* key) {
  uint64_t n = 0;
  for (const auto& t : r["tasks"]) n += t[key].get<uint64_t>();
  return n;
}

TEST_F(CriuLazyTest, MultiThreadedProgramRestoresExactly) {
  const std::string dump = Dir("mt");
  const pid_t pid = StartAndDump({"--mib", "48", "--threads", "4"}, dump);
  ASSERT_GT(pid, 0);
  nlohmann::json r = LazyRestore(dump, pid);
  ASSERT_FALSE(r.empty());
  EXPECT_TRUE(r["restore_finished"].get<bool>());
  ASSERT_EQ(r["tasks"].size(), 1u);
  EXPECT_TRUE(r["tasks"][0]["ok"].get<bool>()) << r.dump(2);
  // 48 MiB of heap went through the daemon.
  EXPECT_GE(Sum(r, "pages_demand") + Sum(r, "pages_background"), 48u * 256) << r.dump(2);
}

TEST_F(CriuLazyTest, ForkMremapDontneedMunmapWhileRestoring) {
  const std::string dump = Dir("events");
  const pid_t pid = StartAndDump(
      {"--mib", "32", "--threads", "2", "--actions", "fork,dontneed,mremap,munmap"}, dump);
  ASSERT_GT(pid, 0);
  // No background fill: every page the program touches after the actions
  // is still missing when it acts, so each event meets unrestored memory.
  nlohmann::json r = LazyRestore(dump, pid, {"--no-background"});
  ASSERT_FALSE(r.empty());
  EXPECT_GE(Sum(r, "forks"), 1u) << r.dump(2);
  EXPECT_GE(Sum(r, "remaps"), 1u) << r.dump(2);
  EXPECT_GE(Sum(r, "removes"), 1u) << r.dump(2);
  EXPECT_GE(Sum(r, "unmaps"), 1u) << r.dump(2);
  EXPECT_GE(Sum(r, "spaces_total"), 2u) << "the forked child was served too";
  // (The program checks that its zombie child came back as a zombie. CRIU
  // 4.2 sent no zombie message for it in our runs; the protocol's zombie
  // message is exercised by ZombieAndEndMarkerByHand.)
}

TEST_F(CriuLazyTest, ShellPipelineOfTwoPrograms) {
  const std::string dump = Dir("pipe");
  const std::string w = kWorkload;
  const std::string script = "trap '' USR1; set -o pipefail; " + w +
                             " --mib 16 --ready \"$1\" --emit | " + w +
                             " --mib 16 --ready \"$1\" --consume";
  Result<pid_t> pid = h_->StartProgram({"bash", "-c", script, "bash", "{READY}"}, 2);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  Status st = h_->Dump(*pid, dump);
  ASSERT_TRUE(st.ok()) << st.ToString();
  nlohmann::json r = LazyRestore(dump, *pid);
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r["tasks"].size(), 3u) << r.dump(2);  // bash and the two programs
  for (const auto& t : r["tasks"]) EXPECT_TRUE(t["ok"].get<bool>()) << r.dump(2);
}

TEST_F(CriuLazyTest, OneDumpRestoredRepeatedly) {
  const std::string dump = Dir("again");
  const pid_t pid = StartAndDump({"--mib", "16", "--threads", "2"}, dump);
  ASSERT_GT(pid, 0);
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE("run " + std::to_string(i));
    nlohmann::json r = LazyRestore(
        dump, pid,
        i == 1 ? std::vector<std::string>{"--no-background"} : std::vector<std::string>{});
    ASSERT_FALSE(r.empty());
  }
}

TEST_F(CriuLazyTest, ImportedImageVerifiesRestoresAndIsSmaller) {
  const std::string dump = Dir("img");
  const pid_t pid = StartAndDump({"--mib", "32", "--threads", "2"}, dump);
  ASSERT_GT(pid, 0);
  const std::string image = tmp_.File("img.pwi");
  testing::CliResult imp = testing::RunCli(kCli, {"import", "--criu", dump, image, "--json"});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  nlohmann::json j = nlohmann::json::parse(imp.out);
  EXPECT_LT(j["image_bytes"].get<uint64_t>(), j["dump_pages_bytes"].get<uint64_t>()) << j.dump(2);
  testing::CliResult v = testing::RunCli(kCli, {"verify", image});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  for (int i = 0; i < 2; ++i) {  // one image, restored any number of times
    nlohmann::json r = LazyRestore(dump, pid, {"--image", image});
    ASSERT_FALSE(r.empty());
    EXPECT_NE(r["source"].get<std::string>().find("image"), std::string::npos) << r.dump(2);
  }
  // An image of another dump is refused before the restore starts.
  const std::string other = Dir("other");
  ASSERT_GT(StartAndDump({"--mib", "4"}, other), 0);
  testing::CliResult bad =
      testing::RunCli(kCli, {"criu", "lazy-pages", "-D", other, "--image", image});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("was not imported from"), std::string::npos) << bad.err;
}

// ---- bad input ---------------------------------------------------------------

class CriuBadInputTest : public CriuLazyTest {
 protected:
  void SetUp() override {
    CriuLazyTest::SetUp();
    if (IsSkipped()) return;
    dump_ = Dir("bad");
    pid_ = StartAndDump({"--mib", "4"}, dump_);
    ASSERT_GT(pid_, 0);
  }
  std::string Copy(const std::string& name) {
    const std::string d = tmp_.File(name);
    fs::copy(dump_, d, fs::copy_options::recursive);
    return d;
  }
  std::string dump_;
  pid_t pid_ = -1;
};

TEST_F(CriuBadInputTest, WrongDirectoryIsNamed) {
  testing::CliResult r = testing::RunCli(kCli, {"criu", "lazy-pages", "-D", tmp_.File("nothing")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not a CRIU dump directory"), std::string::npos) << r.err;
}

TEST_F(CriuBadInputTest, UnknownImagesVersionIsRefused) {
  const std::string d = Copy("v99");
  // inventory.img: magic, entry size, then field 1 (img_version) = 2.
  std::fstream f(d + "/inventory.img", std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(8);
  char key[2];
  f.read(key, 2);
  ASSERT_EQ(key[0], 0x08);
  ASSERT_EQ(key[1], 0x02);
  f.seekp(9);
  f.put(99);
  f.close();
  testing::CliResult r = testing::RunCli(kCli, {"criu", "lazy-pages", "-D", d});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("images version 99 is not supported"), std::string::npos) << r.err;
}

TEST_F(CriuBadInputTest, CorruptPagemapIsNamed) {
  const std::string d = Copy("corrupt");
  const std::string pm = d + "/pagemap-" + std::to_string(pid_) + ".img";
  const auto size = fs::file_size(pm);
  fs::resize_file(pm, size - 3);  // cut inside the last entry
  testing::CliResult r = testing::RunCli(kCli, {"criu", "lazy-pages", "-D", d});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("pagemap-" + std::to_string(pid_) + ".img"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("corruption"), std::string::npos) << r.err;
}

// Plays criu restore on the socket: connects, sends what `criu restore`
// would; returns the connected socket.
int ConnectAsCriu(const std::string& dump) {
  const int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  const std::string path = dump + "/lazy-pages.socket";
  if (s < 0 || path.size() >= sizeof(a.sun_path)) return -1;
  memcpy(a.sun_path, path.c_str(), path.size() + 1);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(s);
    return -1;
  }
  return s;
}

TEST_F(CriuBadInputTest, ZombieAndEndMarkerByHand) {
  Result<criu::Child> d =
      h_->StartDaemon({kCli, "criu", "lazy-pages", "-D", dump_, "--json"}, "zombie");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const int s = ConnectAsCriu(dump_);
  ASSERT_GE(s, 0);
  const int32_t zombie = -12345;
  const uint32_t end = 0x52535446;
  ASSERT_EQ(send(s, &zombie, 4, 0), 4);
  ASSERT_EQ(send(s, &end, 4, 0), 4);
  Result<int> w = h_->Wait(d->pid);
  close(s);
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(WIFEXITED(*w) && WEXITSTATUS(*w) == 0) << Text("zombie.err");
  nlohmann::json r = nlohmann::json::parse(Text("zombie.out"));
  EXPECT_EQ(r["zombies"].get<uint64_t>(), 1u);
  EXPECT_TRUE(r["restore_finished"].get<bool>());
}

TEST_F(CriuBadInputTest, TaskWithoutUserfaultfdFailsLoudly) {
  Result<criu::Child> d = h_->StartDaemon({kCli, "criu", "lazy-pages", "-D", dump_}, "nofd");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  // Play criu restore: the pid, then the fd message without a descriptor.
  const int s = ConnectAsCriu(dump_);
  ASSERT_GE(s, 0);
  const int32_t pid = pid_;
  ASSERT_EQ(send(s, &pid, 4, 0), 4);
  ASSERT_EQ(send(s, "x", 1, 0), 1);
  Result<int> w = h_->Wait(d->pid);
  close(s);
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(WIFEXITED(*w) && WEXITSTATUS(*w) != 0);
  const std::string err = Text("nofd.err");
  EXPECT_NE(err.find("userfaultfd did not arrive"), std::string::npos) << err;
}

}  // namespace
}  // namespace pagewise
