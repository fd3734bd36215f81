// AtomicFile: publication, every failure path leaves the destination as it
// was and no temporary file, planted links and special files are refused,
// outputs that are inputs (by any name) are refused, and SIGINT/SIGTERM
// remove live temporary files while the process still dies of the signal.
#include "base/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include "sys/temp_cleanup.h"
#include "testing/fault_env.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::Fault;
using testing::FaultEnv;
using testing::Op;
using testing::TempDir;

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  closedir(d);
  return out;
}

std::string Slurp(const std::string& path) {
  std::string s;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<missing>";
  char buf[4096];
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

TEST(AtomicFile, CommitPublishesAndLeavesNoTemporaryFile) {
  TempDir dir;
  const std::string out = dir.File("out.bin");
  Spit(out, "old");
  Result<std::unique_ptr<AtomicFile>> f = AtomicFile::Create(out);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(sys::RegisteredTempFiles(), 1u);
  EXPECT_EQ(List(dir.path()).size(), 2u);  // the old file and the temporary one
  ASSERT_TRUE((*f)->Write("new content", 11, 0).ok());
  EXPECT_EQ(Slurp(out), "old");  // untouched until Commit
  ASSERT_TRUE((*f)->Commit().ok());
  EXPECT_EQ(Slurp(out), "new content");
  EXPECT_EQ(List(dir.path()), std::vector<std::string>{"out.bin"});
  EXPECT_EQ(sys::RegisteredTempFiles(), 0u);
  EXPECT_FALSE((*f)->Commit().ok());  // once
}

TEST(AtomicFile, TemporaryNamesAreUnpredictableAndBesideTheDestination) {
  TempDir dir;
  std::set<std::string> names;
  std::vector<std::unique_ptr<AtomicFile>> files;
  for (int i = 0; i < 16; ++i) {
    Result<std::unique_ptr<AtomicFile>> f = AtomicFile::Create(dir.File("x.img"));
    ASSERT_TRUE(f.ok());
    const std::string& t = (*f)->temp_path();
    EXPECT_EQ(t.rfind(dir.File(".x.img.tmp-"), 0), 0u) << t;
    EXPECT_EQ(t.size(), dir.File(".x.img.tmp-").size() + 16);
    EXPECT_EQ(t.find(std::to_string(getpid())), std::string::npos);
    names.insert(t);
    files.push_back(std::move(f).value());
  }
  EXPECT_EQ(names.size(), 16u);
  files.clear();  // destruction abandons: nothing left
  EXPECT_TRUE(List(dir.path()).empty());
}

TEST(AtomicFile, EveryFailurePathKeepsTheDestinationAndRemovesTheTemporary) {
  for (Op op : {Op::kPwrite, Op::kFsync, Op::kClose, Op::kRename}) {
    SCOPED_TRACE(static_cast<int>(op));
    TempDir dir;
    const std::string out = dir.File("out");
    Spit(out, "precious");
    FaultEnv env;
    env.Inject(op, Fault{op == Op::kPwrite ? ENOSPC : EIO});
    AtomicFileOptions o;
    o.env = &env;
    Status s = WriteFileAtomically(out, "replacement", o);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(env.Fired(op), 1);
    EXPECT_EQ(Slurp(out), "precious");
    EXPECT_EQ(List(dir.path()), std::vector<std::string>{"out"});
    EXPECT_EQ(sys::RegisteredTempFiles(), 0u);
  }
}

TEST(AtomicFile, FailedDirectorySyncSaysTheFileIsInPlace) {
  TempDir dir;
  FaultEnv env;
  env.Inject(Op::kFsyncParentDir, Fault{EIO});
  AtomicFileOptions o;
  o.env = &env;
  Status s = WriteFileAtomically(dir.File("out"), "data", o);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("is complete"), std::string::npos) << s.ToString();
  EXPECT_EQ(Slurp(dir.File("out")), "data");
  EXPECT_EQ(List(dir.path()).size(), 1u);
}

TEST(AtomicFile, PlantedSymlinkAtTheDestinationIsNeitherFollowedNorReplaced) {
  TempDir dir;
  const std::string victim = dir.File("victim");
  Spit(victim, "do not touch");
  ASSERT_EQ(symlink(victim.c_str(), dir.File("out").c_str()), 0);
  Status s = WriteFileAtomically(dir.File("out"), "attack");
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("symbolic link"), std::string::npos) << s.ToString();
  EXPECT_EQ(Slurp(victim), "do not touch");
  struct stat st;
  ASSERT_EQ(lstat(dir.File("out").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(List(dir.path()).size(), 2u);
}

TEST(AtomicFile, SpecialFilesAndDirectoriesAreRefused) {
  TempDir dir;
  ASSERT_EQ(mkfifo(dir.File("fifo").c_str(), 0600), 0);
  ASSERT_EQ(mkdir(dir.File("sub").c_str(), 0700), 0);
  for (const std::string& p : {dir.File("fifo"), dir.File("sub"), std::string("/dev/null")}) {
    Status s = WriteFileAtomically(p, "x");
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << p << ": " << s.ToString();
  }
  EXPECT_EQ(WriteFileAtomically(dir.File("sub/"), "x").code(), Code::kInvalidArgument);
  EXPECT_EQ(List(dir.path()).size(), 2u);
}

TEST(AtomicFile, AnOutputThatIsAnInputByAnyNameIsRefused) {
  TempDir dir;
  const std::string input = dir.File("input.img");
  Spit(input, "input bytes");
  ASSERT_EQ(link(input.c_str(), dir.File("hard").c_str()), 0);
  ASSERT_EQ(symlink(input.c_str(), dir.File("soft").c_str()), 0);
  ASSERT_EQ(mkdir(dir.File("d").c_str(), 0700), 0);
  ASSERT_EQ(symlink(dir.path().c_str(), dir.File("d/up").c_str()), 0);
  struct Case {
    std::string out, in;
  };
  const std::vector<Case> cases = {
      {input, input},                       // the same path
      {dir.File("hard"), input},            // a hard link to it
      {input, dir.File("hard")},            // the input named by its hard link
      {input, dir.File("soft")},            // the input named through a symlink
      {dir.File("d/up/input.img"), input},  // through a symlinked directory
  };
  for (const Case& c : cases) {
    AtomicFileOptions o;
    o.inputs = {dir.File("unrelated-missing"), c.in};
    Status s = WriteFileAtomically(c.out, "clobber", o);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << c.out << " / " << c.in;
    EXPECT_NE(s.message().find("destroy the input"), std::string::npos) << s.ToString();
  }
  // Replacing the symlink an input path goes through is refused too.
  Status s = CheckOutputPath(dir.File("soft"), {dir.File("soft")});
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_EQ(Slurp(input), "input bytes");
  // A different file is fine.
  AtomicFileOptions o;
  o.inputs = {input};
  EXPECT_TRUE(WriteFileAtomically(dir.File("other"), "ok", o).ok());
}

// Forks a child that creates a temporary file and then receives `sig`.
// The child must die of that signal and leave no temporary file.
void InterruptedChildLeavesNothing(int sig) {
  TempDir dir;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(ready[0]);
    Result<std::unique_ptr<AtomicFile>> f = AtomicFile::Create(dir.File("big.img"));
    if (!f.ok() || !(*f)->Write("partial", 7, 0).ok()) _exit(10);
    const char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(11);
    for (;;) pause();  // the parent signals us
  }
  close(ready[1]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  EXPECT_EQ(List(dir.path()).size(), 1u);  // the live temporary file
  ASSERT_EQ(kill(pid, sig), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), sig);
  EXPECT_TRUE(List(dir.path()).empty());
}

TEST(AtomicFile, SigintRemovesTheTemporaryFileAndStillKills) {
  InterruptedChildLeavesNothing(SIGINT);
}

TEST(AtomicFile, SigtermRemovesTheTemporaryFileAndStillKills) {
  InterruptedChildLeavesNothing(SIGTERM);
}

}  // namespace
}  // namespace pagewise
