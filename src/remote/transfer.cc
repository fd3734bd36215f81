// ParallelFor and ReadLayerBytes.
#include "remote/transfer.h"

#include <fcntl.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace pagewise::remote {

Status ParallelFor(size_t n, int threads, const std::function<Status(size_t)>& fn,
                   const std::function<void()>& after_each) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first;
  auto run = [&](bool caller) {
    for (size_t i; !failed.load() && (i = next.fetch_add(1)) < n;) {
      Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lk(mu);
        if (first.ok()) first = s;
        failed = true;
      }
      if (caller && after_each) after_each();
    }
  };
  std::vector<std::thread> extra;
  const size_t want = std::min<size_t>(n, static_cast<size_t>(std::max(1, threads)));
  for (size_t t = 1; t < want; ++t) extra.emplace_back(run, false);
  run(true);
  for (std::thread& t : extra) t.join();
  return first;
}

Status ReadLayerBytes(Env* env, const std::string& path, const image::Header& h,
                      std::vector<uint8_t>* header, std::vector<uint8_t>* index) {
  PW_ASSIGN_OR_RETURN(int fd, env->Open(path, O_RDONLY | O_CLOEXEC));
  header->resize(h.header_size);
  index->resize(h.index_length);
  Status s = ReadFully(env, fd, header->data(), header->size(), 0);
  if (s.ok())
    s = ReadFully(env, fd, index->data(), index->size(), static_cast<off_t>(h.index_offset));
  env->Close(fd).IgnoreError();  // read-only
  if (!s.ok()) return s.WithContext("reading image " + path);
  // The file must still be the one that was opened and checked.
  if (image::Checksum64(index->data(), index->size()) != h.index_checksum) {
    return Status::Corruption("image " + path + " changed while it was being read");
  }
  return Status::Ok();
}

}  // namespace pagewise::remote
