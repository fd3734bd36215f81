// ChainImage::Verify: reads and checks every data chunk of every layer.
// Headers and indexes were checked when the chain was opened.
#include "base/bytes.h"
#include "image/chain.h"

namespace pagewise::image {

Status ChainImage::Verify(VerifyError* error) const { return VerifyWithProgress(error, nullptr); }

Status ChainImage::VerifyWithProgress(VerifyError* error, const ProgressFn& progress) const {
  uint64_t total = 0, done = 0;
  for (const auto& l : layers_) total += l->header().stat_compressed_bytes;
  std::vector<uint8_t> raw, scratch;
  for (const auto& l : layers_) {
    const auto& chunks = l->index().chunks;
    for (uint64_t id = 0; id < chunks.size(); ++id) {
      Status s = l->ReadChunk(id, &raw, &scratch);
      if (!s.ok()) {
        uint32_t region = 0;
        uint64_t offset = 0;
        const bool used = l->FirstUserOfChunk(id, &region, &offset);
        if (error != nullptr) {
          error->layer = l->path();
          error->region = used ? static_cast<int64_t>(region) : -1;
          error->offset = used ? offset : chunks[id].file_offset;
          error->what = s.message();
        }
        if (used) {
          return s.WithContext("layer " + l->path() + " region " + std::to_string(region) +
                               " offset " + HexAddr(offset));
        }
        return s.WithContext("layer " + l->path() + " (chunk used by no page)");
      }
      done += chunks[id].stored_length;
      if (progress) progress(done, total);
    }
  }
  return Status::Ok();
}

}  // namespace pagewise::image
