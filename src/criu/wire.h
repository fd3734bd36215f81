// Protobuf wire-format decoding: just enough to read CRIU's image messages.
//
// CRIU writes its images with protobuf-c (proto2). A message is a sequence
// of fields, each a key (field number << 3 | wire type) as a varint, then a
// payload: a varint (type 0), 8 bytes (type 1), a length-delimited byte
// string (type 2: strings, nested messages, packed repeated scalars) or 4
// bytes (type 5). Unknown fields are skipped, so newer CRIU versions that
// add fields still decode; groups (types 3/4) are refused: CRIU never
// writes them.
//
// Every read is bounds-checked against the buffer: malformed input gives
// kCorruption naming what was wrong and where, never a read outside it.
//
// Thread safety: a WireReader is a cursor over caller-owned bytes; use one
// per thread. The functions are pure.
#ifndef PAGEWISE_CRIU_WIRE_H_
#define PAGEWISE_CRIU_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "pagewise/status.h"

namespace pagewise::criu {

enum class WireType : uint8_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

struct WireField {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t value = 0;      // kVarint, kFixed64, kFixed32
  std::string_view bytes;  // kBytes: a view into the reader's buffer
};

class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  // Decodes the next field into *f. Requires !done(). kCorruption on a
  // truncated or malformed field (the message says which byte).
  Status Next(WireField* f);

 private:
  Status Varint(uint64_t* v);
  std::string_view data_;
  size_t pos_ = 0;
};

// Decodes one varint from the front of *data (and consumes it).
Status ReadVarint(std::string_view* data, uint64_t* v);
// ZigZag decoding of sint32/sint64.
inline int64_t ZigZag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}
// A repeated scalar varint field: either one varint (unpacked) or a packed
// byte string of varints. Appends to *out.
Status AppendRepeatedVarint(const WireField& f, std::vector<uint64_t>* out);

}  // namespace pagewise::criu

#endif  // PAGEWISE_CRIU_WIRE_H_
