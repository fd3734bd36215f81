// libFuzzer target for remote layer manifests (what a bucket hands the
// image reader): DecodeManifest, then the layer built from it
// (Layer::FromParts: header and index checks) in a chain, read through a
// chunk source that serves no real data. Nothing may crash, hang, leak or
// allocate beyond the input's size.
//
// Input: [mode u8][manifest bytes]. Mode bit 1 recomputes the manifest's
// trailing checksum so that mutations reach the header and index decoders.
// Seeds in fuzz/corpus/manifest_fuzz are manifests written by `pagewise
// push` of tiny images (fetched from the bucket), framed with mode 1.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "image/chain.h"
#include "remote/manifest.h"

namespace {

namespace img = pagewise::image;
using pagewise::ReadPriority;
using pagewise::Result;
using pagewise::Status;

// Chunks of the fuzzed layer: zero bytes (they then fail their checksums).
class ZeroChunks final : public img::ChunkSource {
 public:
  Status ReadStored(uint64_t, const img::ChunkEntry& c, uint8_t* dst, ReadPriority,
                    const std::string&) const override {
    std::memset(dst, 0, c.stored_length);
    return Status::Ok();
  }
  bool remote() const override { return true; }  // exercise the hint paths too
};

class OneLayer final : public img::LayerResolver {
 public:
  explicit OneLayer(const pagewise::remote::Manifest& m) : m_(m) {}
  Result<std::unique_ptr<img::Layer>> OpenLayer(const std::string& name,
                                                uint64_t* bad_at) override {
    if (name != "top") return Status::NotFound("no parent in this fuzz target");
    return img::Layer::FromParts(name, m_.header.data(), m_.header.size(), m_.file_size,
                                 m_.index.data(), m_.index.size(), std::make_unique<ZeroChunks>(),
                                 "", bad_at);
  }
  std::string ParentName(const img::Layer&) override { return "parent"; }

 private:
  const pagewise::remote::Manifest& m_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::vector<uint8_t> bytes(data + 1, data + size);
  if ((data[0] & 1) && bytes.size() >= 8) {
    pagewise::StoreLe64(bytes.data() + bytes.size() - 8,
                        img::Checksum64(bytes.data(), bytes.size() - 8));
  }
  Result<pagewise::remote::Manifest> m =
      pagewise::remote::DecodeManifest(bytes.data(), bytes.size(), "fuzz");
  if (!m.ok()) return 0;
  OneLayer layers(*m);
  Result<std::unique_ptr<img::ChainImage>> chain = img::ChainImage::OpenChainWith(&layers, "top");
  if (!chain.ok()) return 0;
  const img::ChainImage& image = **chain;
  std::vector<uint8_t> buf;
  std::vector<pagewise::Image::SourceRun> runs;
  for (uint32_t r = 0; r < image.regions().size() && r < 64; ++r) {
    const pagewise::Region& reg = image.regions()[r];
    const uint64_t len = std::min<uint64_t>(reg.length, 64 * uint64_t{reg.page_size});
    buf.resize(len);
    image.ReadWithPriority(r, 0, buf.data(), len, ReadPriority::kBackground).IgnoreError();
    image.ClassifyRuns(r, 0, reg.length, &runs).IgnoreError();
  }
  image.WillNeedFlat({0, 4096, 1u << 20}, ReadPriority::kPrefetch);
  const uint64_t flat = std::min<uint64_t>(image.flat_size(), 256 << 10);
  buf.resize(flat);
  image.ReadFlat(0, buf.data(), flat).IgnoreError();
  pagewise::VerifyError err;
  image.Verify(&err).IgnoreError();
  return 0;
}
