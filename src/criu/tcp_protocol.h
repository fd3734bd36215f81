// The wire protocol between CriuTcpServer and the remote page source.
//
// Every frame is fixed-size little-endian fields (x86-64 host order),
// checked on receipt:
//   client -> server  Hello      magic "PWCRIU01", u32 version (1), u32 role
//                                (0 demand, 1 bulk), u64 layout digest, u64
//                                flat size
//   server -> client  HelloReply magic, u32 version, u32 status (0: accepted),
//                                u64 digest, u64 flat size, u32 text length,
//                                u32 0; then the text (why it refused)
//   client -> server  Request    u64 id, u64 flat offset, u32 length, u32 0
//   server -> client  Response   u64 id, u32 status (0: data follows), u32
//                                length, u64 XXH64 of the data; then the
//                                data, or (status != 0) an error text
// A client keeps one request in flight per connection; it uses one
// connection for demand reads and one for bulk (background, prefetch)
// reads, so a fault's request never queues behind a bulk transfer.
//
// Thread safety: plain data.
#ifndef PAGEWISE_CRIU_TCP_PROTOCOL_H_
#define PAGEWISE_CRIU_TCP_PROTOCOL_H_

#include <cstdint>
#include <cstring>

namespace pagewise::criu::wire {

inline constexpr char kMagic[8] = {'P', 'W', 'C', 'R', 'I', 'U', '0', '1'};
inline constexpr uint32_t kVersion = 1;
inline constexpr uint32_t kRoleDemand = 0;
inline constexpr uint32_t kRoleBulk = 1;
inline constexpr uint32_t kMaxText = 4096;

struct Hello {
  char magic[8];
  uint32_t version;
  uint32_t role;
  uint64_t digest;
  uint64_t flat_size;
};
struct HelloReply {
  char magic[8];
  uint32_t version;
  uint32_t status;
  uint64_t digest;
  uint64_t flat_size;
  uint32_t text_len;
  uint32_t reserved;
};
struct Request {
  uint64_t id;
  uint64_t offset;
  uint32_t len;
  uint32_t reserved;
};
struct Response {
  uint64_t id;
  uint32_t status;
  uint32_t len;
  uint64_t checksum;
};
static_assert(sizeof(Hello) == 32 && sizeof(HelloReply) == 40 && sizeof(Request) == 24 &&
              sizeof(Response) == 24);

inline bool MagicOk(const char* m) { return std::memcmp(m, kMagic, sizeof(kMagic)) == 0; }

}  // namespace pagewise::criu::wire

#endif  // PAGEWISE_CRIU_TCP_PROTOCOL_H_
