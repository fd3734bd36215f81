// ForkGuard implementation: a fixed table of engines and three atfork
// handlers. The table is a fixed array so that the handlers never allocate.
#include "restore/fork_guard.h"

#include <pthread.h>

namespace pagewise::restore {
namespace {

constexpr int kMaxEngines = 256;

struct Guard {
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  ForkAware* engines[kMaxEngines] = {};
  int count = 0;
  bool installed = false;
};

// Never destroyed: a fork during static destruction must still find it.
Guard& G() {
  static Guard* g = new Guard();
  return *g;
}

void Prepare() {
  Guard& g = G();
  pthread_mutex_lock(&g.mu);
  for (int i = 0; i < g.count; ++i) g.engines[i]->EnterForkMode();
}

void Parent() {
  Guard& g = G();
  for (int i = 0; i < g.count; ++i) g.engines[i]->LeaveForkMode();
  pthread_mutex_unlock(&g.mu);
}

void Child() {
  Guard& g = G();
  for (int i = 0; i < g.count; ++i) g.engines[i]->BecomeForkedCopy();
  // The child has no engine threads: it looks after nothing.
  g.count = 0;
  pthread_mutex_unlock(&g.mu);
}

}  // namespace

bool RegisterForFork(ForkAware* engine) {
  Guard& g = G();
  pthread_mutex_lock(&g.mu);
  if (!g.installed) {
    pthread_atfork(Prepare, Parent, Child);
    g.installed = true;
  }
  const bool room = g.count < kMaxEngines;
  if (room) g.engines[g.count++] = engine;
  pthread_mutex_unlock(&g.mu);
  return room;
}

void UnregisterForFork(ForkAware* engine) {
  Guard& g = G();
  pthread_mutex_lock(&g.mu);
  for (int i = 0; i < g.count; ++i) {
    if (g.engines[i] == engine) {
      g.engines[i] = g.engines[--g.count];
      break;
    }
  }
  pthread_mutex_unlock(&g.mu);
}

}  // namespace pagewise::restore
