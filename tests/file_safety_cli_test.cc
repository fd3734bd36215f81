// The file-writing commands (import, export, flatten, serve --record)
// through the pagewise binary, tried the way a careless user or a local
// attacker would: symbolic links planted at the destination and at
// plausible temporary names, outputs that are inputs (the same path, a hard
// link, a symbolic link, a layer of the input's chain), bad numbers, an
// import interrupted by SIGINT/SIGTERM, and a ~1 KiB image declaring
// terabytes. Nothing may be written through a link, no input may change,
// no command may die of a signal, and work follows the stored content.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "pagewise/image.h"
#include "testing/cli_runner.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::CliResult;
using testing::TempDir;

constexpr size_t kPs = 4096;

CliResult Pw(const std::vector<std::string>& args) {
  return testing::RunCli(PAGEWISE_CLI_PATH, args);
}

std::string Slurp(const std::string& path) {
  std::string s;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<missing>";
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
  close(fd);
  return s;
}

void Spit(const std::string& path, const std::string& s) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size()));
  close(fd);
}

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool IsSymlink(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

// A 64-page flat file with a pattern, imported as base.img, and top.img a
// layer on it (written with the library).
struct Files {
  TempDir dir;
  std::string raw = dir.File("guest.raw"), base = dir.File("base.img"), top = dir.File("top.img");
  std::string raw_bytes, base_bytes, top_bytes;

  Files() {
    std::string data(64 * kPs, '\0');
    for (size_t i = 0; i < 64; i += 2) testing::FillPage(data.data() + i * kPs, 5, i);
    Spit(raw, data);
    EXPECT_EQ(Pw({"import", raw, base}).exit_code, 0);
    ImageWriteOptions o;
    o.parent = base;
    auto w = ImageWriter::Create(top, o);
    EXPECT_TRUE(w.ok());
    std::string page(kPs, 'T');
    EXPECT_TRUE((*w)->AddPages(0, 3 * kPs, page.data(), kPs).ok());
    EXPECT_TRUE((*w)->Commit().ok());
    raw_bytes = Slurp(raw);
    base_bytes = Slurp(base);
    top_bytes = Slurp(top);
  }
  void ExpectInputsIntact() const {
    EXPECT_EQ(Slurp(raw), raw_bytes);
    EXPECT_EQ(Slurp(base), base_bytes);
    EXPECT_EQ(Slurp(top), top_bytes);
    EXPECT_EQ(Pw({"verify", top}).exit_code, 0);
  }
};

TEST(FileSafetyCli, PlantedSymlinksAreNeverWrittenThrough) {
  Files f;
  const std::string victim = f.dir.File("victim"), out = f.dir.File("out");
  Spit(victim, "precious");
  ASSERT_EQ(symlink(victim.c_str(), out.c_str()), 0);
  // Links at names a temporary file might have had: nothing may use them.
  const std::vector<std::string> decoys = {out + ".tmp", f.dir.File(".out.tmp"),
                                           out + ".pagewise-export-1", out + ".tmp.1"};
  for (const std::string& d : decoys) ASSERT_EQ(symlink(victim.c_str(), d.c_str()), 0);
  const std::vector<std::vector<std::string>> commands = {
      {"export", f.top, out},
      {"import", f.raw, out},
      {"flatten", f.top, out},
      {"serve", "--socket", f.dir.File("s.sock"), "--image", f.top, "--record", out},
  };
  for (const auto& cmd : commands) {
    const CliResult r = Pw(cmd);
    EXPECT_EQ(r.exit_code, 2) << cmd[0] << ": " << r.err;
    EXPECT_NE(r.err.find("symbolic link"), std::string::npos) << r.err;
    EXPECT_EQ(Slurp(victim), "precious");
    EXPECT_TRUE(IsSymlink(out));
  }
  // A real output beside the decoys: written, and the decoys untouched.
  const std::string real = f.dir.File("real.raw");
  ASSERT_EQ(Pw({"export", f.top, real}).exit_code, 0);
  EXPECT_EQ(Slurp(victim), "precious");
  for (const std::string& d : decoys) EXPECT_TRUE(IsSymlink(d)) << d;
  std::vector<std::string> want = {
      ".out.tmp", "base.img",  "guest.raw", "out",     "out.pagewise-export-1",
      "out.tmp",  "out.tmp.1", "real.raw",  "top.img", "victim"};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(List(f.dir.path()), want);  // no temporary file left behind
  f.ExpectInputsIntact();
}

TEST(FileSafetyCli, OutputsThatAreInputsAreRefused) {
  Files f;
  const std::string hard_raw = f.dir.File("hard.raw"), hard_base = f.dir.File("hard.img");
  ASSERT_EQ(link(f.raw.c_str(), hard_raw.c_str()), 0);
  ASSERT_EQ(link(f.base.c_str(), hard_base.c_str()), 0);
  const std::vector<std::vector<std::string>> commands = {
      {"import", f.raw, f.raw},
      {"import", f.raw, hard_raw},
      {"import", hard_raw, f.raw},
      {"export", f.top, f.top},
      {"export", f.top, f.base},  // a layer of the chain
      {"export", f.top, hard_base},
      {"flatten", f.top, f.top},
      {"flatten", f.top, f.base},
      {"flatten", f.top, hard_base},
      {"serve", "--socket", f.dir.File("s.sock"), "--image", f.top, "--record", f.base},
      {"serve", "--socket", f.dir.File("s.sock"), "--mem-file", f.raw, "--record", hard_raw},
  };
  for (const auto& cmd : commands) {
    const CliResult r = Pw(cmd);
    EXPECT_EQ(r.exit_code, 2) << cmd[0] << " " << cmd.back() << ": " << r.err;
    EXPECT_NE(r.err.find("destroy the input"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("Usage: pagewise " + cmd[0]), std::string::npos) << r.err;
  }
  f.ExpectInputsIntact();
}

TEST(FileSafetyCli, BadNumbersAreUsageErrorsNotSignals) {
  Files f;
  const std::string sock = f.dir.File("s.sock"), out = f.dir.File("o");
  const std::vector<std::vector<std::string>> commands = {
      {"import", "--page-size", "0", f.raw, out},
      {"import", "--page-size", "1", f.raw, out},
      {"import", "--page-size", "3", f.raw, out},
      {"import", "--page-size", "-1", f.raw, out},
      {"import", "--page-size", "4294967295", f.raw, out},
      {"import", "--page-size", "33554432", f.raw, out},
      {"import", "--page-size", "4k", f.raw, out},
      {"import", "--level", "abc", f.raw, out},
      {"import", "--level", "999", f.raw, out},
      {"import", "--compress", "gzip", f.raw, out},
      {"flatten", "--level", "-99999999999", f.top, out},
      {"serve", "--socket", sock, "--image", f.top, "--window", "0"},
      {"serve", "--socket", sock, "--image", f.top, "--window", "513"},
      {"serve", "--socket", sock, "--image", f.top, "--batch", "0"},
      {"serve", "--socket", sock, "--image", f.top, "--batch", "100000"},
      {"serve", "--socket", sock, "--image", f.top, "--clients", "-1"},
      {"serve", "--socket", sock, "--image", f.top, "--max-regions", "0"},
      {"serve", "--socket", sock, "--image", f.top, "--max-client-bytes", "0"},
      {"serve", "--socket", sock, "--image", f.top, "--max-total-bytes", "-5"},
      {"serve", "--socket", sock, "--image", f.top, "--socket-mode", "999"},
      {"serve", "--socket", sock, "--image", f.top, "--socket-mode", "rw"},
      {"serve", "--socket", sock, "--image", f.top, "--allow-uid", "-1"},
      {"serve", "--socket", sock, "--image", f.top, "--handshake-timeout-ms", "0"},
      {"serve", "--image", f.top},  // neither --socket nor --tcp
      // serve --tcp: the Unix server's options are refused beside it, and
      // --criu-dir/--status-fd need it.
      {"serve", "--tcp", "127.0.0.1:0", "--socket", sock, "--image", f.top},
      {"serve", "--tcp", "127.0.0.1:0", "--image", f.top, "--window", "8"},
      {"serve", "--tcp", "127.0.0.1:0", "--image", f.top, "--record", out},
      {"serve", "--tcp", "127.0.0.1:0"},
      {"serve", "--tcp", "127.0.0.1:0", "--image", f.top, "--criu-dir", f.dir.path()},
      {"serve", "--tcp", "127.0.0.1:0", "--image", f.top, "--status-fd", "-1"},
      {"serve", "--socket", sock, "--image", f.top, "--criu-dir", f.dir.path()},
      {"serve", "--socket", sock, "--image", f.top, "--status-fd", "1"},
      {"export", f.top},
      {"inspect"},
      {"verify", f.top, "extra"},
  };
  for (const auto& cmd : commands) {
    const CliResult r = Pw(cmd);
    std::string line;
    for (const auto& a : cmd) line += a + " ";
    EXPECT_EQ(r.exit_code, 2) << line << "\n" << r.err;
    EXPECT_NE(r.err.find("Usage: pagewise " + cmd[0]), std::string::npos) << line << r.err;
  }
  EXPECT_EQ(List(f.dir.path()).size(), 3u);  // nothing was written
}

// Starts `pagewise import` of a large, slow-to-compress file, waits until
// its temporary file exists, sends `sig`; it must die of the signal and
// leave nothing but its input.
void InterruptImport(int sig) {
  TempDir dir;
  const std::string raw = dir.File("big.raw");
  {
    std::string data(32 << 20, '\0');
    for (size_t i = 0; i < data.size() / kPs; ++i) testing::FillPage(data.data() + i * kPs, 7, i);
    Spit(raw, data);
  }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int null_fd = open("/dev/null", O_WRONLY);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    execl(PAGEWISE_CLI_PATH, PAGEWISE_CLI_PATH, "import", "--level", "19", raw.c_str(),
          dir.File("big.img").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Its temporary file appears as soon as the writer starts.
  for (;;) {
    if (List(dir.path()).size() == 2) break;
    int st;
    ASSERT_EQ(waitpid(pid, &st, WNOHANG), 0) << "import ended before it was interrupted";
    std::this_thread::yield();
  }
  ASSERT_EQ(kill(pid, sig), 0);
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(st)) << st;
  EXPECT_EQ(WTERMSIG(st), sig);
  EXPECT_EQ(List(dir.path()), std::vector<std::string>{"big.raw"});
}

TEST(FileSafetyCli, SigintDuringImportLeavesNoTemporaryFile) { InterruptImport(SIGINT); }
TEST(FileSafetyCli, SigtermDuringImportLeavesNoTemporaryFile) { InterruptImport(SIGTERM); }

TEST(FileSafetyCli, CraftedImageDeclaringTerabytesCostsItsStoredSize) {
  TempDir dir;
  const std::string crafted = dir.File("crafted.img");
  {
    // 4 TiB nothing recorded, 4 TiB recorded as zero, 16 pages of data.
    auto w = ImageWriter::Create(crafted);
    ASSERT_TRUE(w.ok());
    const uint64_t tib4 = uint64_t{1} << 42;
    Region absent, zero, data;
    absent.length = zero.length = tib4;
    zero.offset = tib4;
    data.length = 16 * kPs;
    data.offset = 2 * tib4;
    absent.kind = zero.kind = data.kind = RegionKind::kFlat;
    ASSERT_TRUE((*w)->AddRegion(absent).ok());
    ASSERT_TRUE((*w)->AddRegion(zero).ok());
    ASSERT_TRUE((*w)->AddRegion(data).ok());
    ASSERT_TRUE((*w)->AddZeroPages(1, 0, tib4).ok());
    std::string bytes(16 * kPs, 'd');
    ASSERT_TRUE((*w)->AddPages(2, 0, bytes.data(), bytes.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  struct stat st;
  ASSERT_EQ(stat(crafted.c_str(), &st), 0);
  EXPECT_LT(st.st_size, 3 * 1024);
  const std::string flat = dir.File("flat.img"), raw = dir.File("out.raw");
  for (const auto& cmd : std::vector<std::vector<std::string>>{
           {"verify", crafted},
           {"inspect", "--json", crafted},
           {"flatten", crafted, flat},
           {"verify", flat},
           {"diff", "--exit-code", crafted, flat},
           {"export", crafted, raw},
       }) {
    const CliResult r = Pw(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd[0] << ": " << r.err;
  }
  ASSERT_EQ(stat(raw.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), (uint64_t{1} << 43) + 16 * kPs);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, uint64_t{1} << 20);  // sparse
  EXPECT_EQ(Slurp(flat).size() < 3 * 1024, true);
}

}  // namespace
}  // namespace pagewise
