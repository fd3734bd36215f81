// Pause points and testing variants: the two hooks `pagewise explore`
// (src/explore/) has into pagewise's own code.
//
// PW_PAUSE_POINT("engine.fill.before_ioctl") names a step boundary in a
// concurrent code path (the restore engine, the trackers). With no explorer
// attached it costs one relaxed atomic load and a predicted branch. With one
// attached, the thread that reaches the point calls the explorer's
// PauseListener, which may block it until the explorer's scheduler lets it
// go on: that is how the explorer forces an interleaving of pagewise's
// threads with the program's threads and the kernel. A thread announces
// itself with a point named "<role>.start" before any other point (the
// explorer learns the role from it; e.g. "engine.loop.start").
//
// PW_TESTING_VARIANT(kName) is true only while the explorer runs a negative
// control (`pagewise explore --variant NAME`): a deliberately broken
// version of one code path, which the explorer must catch. Off by default
// (one relaxed load); never set outside the explorer. Each use sits at the
// exact line it breaks, with a comment saying what the real code does.
//
// Thread safety: the macros may be used from any thread, also in a forked
// child (the listener then belongs to the parent's explorer and must not be
// relied on: the explorer never lets a child reach a point). Attach and
// Detach are called by the explorer only, while no thread can be inside a
// point (before the code under test starts and after it stopped).
#ifndef PAGEWISE_BASE_PAUSE_POINT_H_
#define PAGEWISE_BASE_PAUSE_POINT_H_

#include <atomic>
#include <cstdint>

namespace pagewise::pause {

class PauseListener {
 public:
  virtual ~PauseListener() = default;
  // Called on the thread that reached `point` (a string literal). May block.
  virtual void Reached(const char* point) = 0;
};

// The broken variants the explorer can switch on (see the uses).
enum class Variant : uint32_t {
  kNone = 0,
  // Restore engine: after EAGAIN from a fill ioctl, retry without reading
  // the pending userfaultfd events.
  kEagainWithoutDrain,
  // Restore engine: a fill validated against the page map is issued
  // without excluding reads of the userfaultfd, so a REMOVE read meanwhile
  // does not stop a batch already in flight.
  kFillPastRemove,
  // Restore engine, fork mode: the filler resumes as soon as fork(2)
  // returned, before the FORK event was applied, so the child's page map is
  // copied from the parent's state after fills the child never got.
  kForkChildFromParentState,
  // Tracker races: track with the two-step backend (track/two_step.cc,
  // which reports written pages and re-arms them only at the next collect)
  // instead of uffd-wp-async. Selects a backend; no line tests it.
  kTwoStepTracker,
};

namespace internal {
extern std::atomic<bool> g_attached;
extern std::atomic<uint32_t> g_variant;
void Reach(const char* point);  // slow path: calls the listener
}  // namespace internal

// Installs (listener != nullptr) or removes the explorer's listener.
void Attach(PauseListener* listener);
void Detach();
// Switches a variant on (kNone: every variant off).
void SetVariant(Variant v);

inline bool VariantActive(Variant v) {
  return internal::g_variant.load(std::memory_order_relaxed) == static_cast<uint32_t>(v);
}

}  // namespace pagewise::pause

#define PW_PAUSE_POINT(name)                                                                      \
  do {                                                                                            \
    if (__builtin_expect(::pagewise::pause::internal::g_attached.load(std::memory_order_relaxed), \
                         0)) {                                                                    \
      ::pagewise::pause::internal::Reach(name);                                                   \
    }                                                                                             \
  } while (0)

#define PW_TESTING_VARIANT(name) \
  (__builtin_expect(::pagewise::pause::VariantActive(::pagewise::pause::Variant::name), 0))

#endif  // PAGEWISE_BASE_PAUSE_POINT_H_
