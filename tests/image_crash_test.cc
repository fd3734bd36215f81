// Crash safety of image writing: a child process writing a chain of images
// is SIGKILLed at random moments, many times. Afterwards every file at a
// final image name opens, verifies and holds exactly the data written for
// it (never an image that verifies but holds wrong data); every image whose
// Commit the child reported is there; leftovers are temporary files whose
// names cannot be mistaken for images.
//
// The kill moment is chosen through a pipe: the child writes one byte after
// each AddPages call and after each Commit ('C'); the parent reads a random
// number of bytes, then kills. The child does not wait for the parent, so
// the kill lands anywhere in the following work (often inside Commit's
// writes, fsync or rename). No sleeps.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "pagewise/image.h"
#include "testing/test_util.h"

namespace pagewise {
namespace {

using testing::FillPage;
using testing::TempDir;

constexpr uint32_t kPs = 4096;
constexpr size_t kPages = 64;
constexpr int kLayers = 6;
constexpr int kAddsPerLayer = 8;

std::string Name(int k) { return "img-" + std::to_string(k); }

// Applies layer k's writes to `mem` (a model of the region) and, when `w`
// is set, records them in the writer, reporting each call on `fd`.
bool ApplyLayer(int k, std::vector<char>* mem, ImageWriter* w, int fd) {
  for (int step = 0; step < kAddsPerLayer; ++step) {
    const size_t first = step * (kPages / kAddsPerLayer), n = kPages / kAddsPerLayer;
    for (size_t p = first; p < first + n; ++p) {
      if (k > 0 && (p + k) % 3 != 0 && p % 7 != static_cast<size_t>(k % 7)) continue;
      char* page = mem->data() + p * kPs;
      const bool zero = k > 0 && p % 7 == static_cast<size_t>(k % 7);
      if (zero) {
        std::memset(page, 0, kPs);
        if (w != nullptr && !w->AddZeroPages(0, p * kPs, kPs).ok()) return false;
      } else {
        FillPage(page, 100 + k, p);
        if (w != nullptr && !w->AddPages(0, p * kPs, page, kPs).ok()) return false;
      }
    }
    if (fd >= 0) {
      const char b = 'p';
      if (write(fd, &b, 1) != 1) return false;
    }
  }
  return true;
}

// The child: writes img-0 .. img-(kLayers-1), each on top of the previous.
[[noreturn]] void Child(const std::string& dir, int fd) {
  std::vector<char> mem(kPages * kPs, 0);
  for (int k = 0; k < kLayers; ++k) {
    ImageWriteOptions opt;
    opt.chunk_bytes = 4 * kPs;
    opt.compression = k % 2 ? Compression::kLz4 : Compression::kZstd;
    if (k > 0) opt.parent = dir + "/" + Name(k - 1);
    auto w = ImageWriter::Create(dir + "/" + Name(k), opt);
    if (!w.ok()) _exit(2);
    if (k == 0) {
      Region r;
      r.address = 0x40000000;
      r.length = kPages * kPs;
      r.page_size = kPs;
      r.name = "mem";
      if (!(*w)->AddRegion(r).ok()) _exit(3);
    }
    if (!ApplyLayer(k, &mem, w->get(), fd)) _exit(4);
    if (!(*w)->Commit().ok()) _exit(5);
    const char c = 'C';
    if (write(fd, &c, 1) != 1) _exit(6);
  }
  _exit(0);
}

TEST(ImageCrash, KilledWritersNeverLeaveWrongImages) {
  std::mt19937_64 rng(20240611);
  const int kEvents = kLayers * (kAddsPerLayer + 1);
  std::vector<std::vector<char>> expect(kLayers);
  {
    std::vector<char> mem(kPages * kPs, 0);
    for (int k = 0; k < kLayers; ++k) {
      ASSERT_TRUE(ApplyLayer(k, &mem, nullptr, -1));
      expect[k] = mem;
    }
  }
  int killed_mid_image = 0, with_temps = 0, images_checked = 0;
  for (int iter = 0; iter < 100; ++iter) {
    TempDir dir;
    int pfd[2];
    ASSERT_EQ(pipe(pfd), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(pfd[0]);
      Child(dir.path(), pfd[1]);
    }
    close(pfd[1]);
    const int stop_after = 1 + static_cast<int>(rng() % kEvents);
    int seen = 0, commits = 0;
    char buf;
    while (seen < stop_after && read(pfd[0], &buf, 1) == 1) {
      ++seen;
      commits += buf == 'C';
    }
    kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    close(pfd[0]);
    ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
        << "child failed on its own: status " << status;

    int finals = 0, temps = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
      const std::string name = e.path().filename().string();
      if (name.rfind("img-", 0) == 0) {
        ++finals;
        continue;
      }
      // Anything else must be a writer's temporary file: hidden, marked.
      EXPECT_EQ(name[0], '.') << name;
      EXPECT_NE(name.find(".tmp-"), std::string::npos) << name;
      ++temps;
    }
    with_temps += temps > 0;
    for (int k = 0; k < kLayers; ++k) {
      const std::string path = dir.File(Name(k));
      const bool exists = std::filesystem::exists(path);
      if (k < commits) {
        EXPECT_TRUE(exists) << "committed image lost: " << path;
      }
      if (!exists) {
        // Images appear in order: nothing after a missing one.
        for (int j = k + 1; j < kLayers; ++j) {
          EXPECT_FALSE(std::filesystem::exists(dir.File(Name(j))));
        }
        killed_mid_image++;
        break;
      }
      VerifyError err;
      Status v = VerifyImage(path, &err);
      ASSERT_TRUE(v.ok()) << "iteration " << iter << ": " << v.ToString();
      auto img = Image::Open(path);
      ASSERT_TRUE(img.ok()) << img.status().ToString();
      ASSERT_EQ((*img)->layers().size(), static_cast<size_t>(k + 1));
      std::vector<char> back(kPages * kPs);
      ASSERT_TRUE((*img)->Read(0, 0, back.data(), back.size()).ok());
      ASSERT_TRUE(back == expect[k])
          << "iteration " << iter << ": " << path << " verifies but holds wrong data";
      ++images_checked;
    }
    EXPECT_EQ(finals + temps,
              static_cast<int>(std::distance(std::filesystem::directory_iterator(dir.path()),
                                             std::filesystem::directory_iterator())));
  }
  // The kills really landed in the middle of writing, many times.
  EXPECT_GT(killed_mid_image, 30);
  EXPECT_GT(with_temps, 5);
  EXPECT_GT(images_checked, 100);
  std::fprintf(stderr, "killed mid-chain %d times, temporaries left %d times, %d images checked\n",
               killed_mid_image, with_temps, images_checked);
}

}  // namespace
}  // namespace pagewise
