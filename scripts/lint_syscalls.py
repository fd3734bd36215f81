#!/usr/bin/env python3
"""Lists raw system calls made outside src/sys (scripts/lint.sh rule 1).

Usage: lint_syscalls.py FILE...   prints "path:line: name(" per call found.

A raw system call is a call of a libc system-call wrapper (open, read, mmap,
ioctl, syscall, socket, fork, ...: NAMES below), written as a free-function
call `name(` or `::name(`. Method calls (`x.read(`, `p->close(`), qualified
names (`std::bind(`, `Foo::write(`), comments and string literals are not
calls. Which files are checked is decided by lint.sh, not here.
"""
import re
import sys

NAMES = r"""
open openat openat2 open64 creat close close_range
read write pread pread64 pwrite pwrite64 readv writev preadv preadv2 pwritev pwritev2
lseek lseek64 sendfile splice tee vmsplice copy_file_range
mmap mmap64 munmap madvise mprotect mremap msync mlock mlock2 munlock mlockall munlockall
mincore process_madvise process_vm_readv process_vm_writev
socket socketpair connect bind listen accept accept4 shutdown
send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg
setsockopt getsockopt getsockname getpeername
poll ppoll select pselect epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2
ioctl syscall fork vfork clone clone3 execve execveat execv execvp execvpe execl execlp execle
kill tgkill tkill waitpid wait wait3 wait4 waitid pipe pipe2 dup dup2 dup3 fcntl
eventfd eventfd_read eventfd_write signalfd timerfd_create timerfd_settime timerfd_gettime
memfd_create userfaultfd pidfd_open pidfd_getfd pidfd_send_signal
fstat fstat64 stat stat64 lstat fstatat statx statfs fstatfs access faccessat
unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir link linkat symlink symlinkat
readlink readlinkat chmod fchmod chown fchown getdents getdents64 mknod
fsync fdatasync sync_file_range ftruncate truncate fallocate posix_fallocate
prctl setpriority getpriority getrandom flock sigaction sigprocmask rt_sigaction
sched_yield sched_setaffinity sched_getaffinity sched_setscheduler sched_getscheduler
sched_setparam sched_getparam sched_setattr sched_getattr
mount umount umount2 chdir fchdir chroot setns unshare uname sysinfo getrlimit setrlimit
prlimit getpid getppid gettid _exit raise signal sigaltstack setitimer alarm isatty
mkstemp mkostemp mkdtemp
""".split()
CALL = re.compile(r"(?:(?<![A-Za-z0-9_.>:])|(?<![A-Za-z0-9_]::)(?<=::))(" + "|".join(
    sorted(NAMES, key=len, reverse=True)) + r")\s*\(")
# `::name(` counts only as the global scope (nothing qualified before it).
GLOBAL_SCOPE_OK = re.compile(r"(^|[^A-Za-z0-9_:])::$")


def strip(text):
  """Replaces comments and string/char literals by spaces (keeps newlines)."""
  out, i, n = [], 0, len(text)
  while i < n:
    c = text[i]
    if text.startswith("//", i):
      j = text.find("\n", i)
      j = n if j < 0 else j
      out.append(" " * (j - i))
      i = j
    elif text.startswith("/*", i):
      j = text.find("*/", i + 2)
      j = n if j < 0 else j + 2
      out.append(re.sub(r"[^\n]", " ", text[i:j]))
      i = j
    elif c == 'R' and text.startswith('R"', i):
      m = re.match(r'R"([^(]*)\(', text[i:])
      end = text.find(")" + (m.group(1) if m else "") + '"', i)
      j = n if end < 0 else end + len(m.group(1) if m else "") + 2
      out.append(re.sub(r"[^\n]", " ", text[i:j]))
      i = j
    elif c in "\"'":
      j = i + 1
      while j < n and text[j] != c and text[j] != "\n":
        j += 2 if text[j] == "\\" else 1
      j = min(j + 1, n)
      out.append(" " * (j - i))
      i = j
    else:
      out.append(c)
      i += 1
  return "".join(out)


def main():
  found = 0
  for path in sys.argv[1:]:
    try:
      text = open(path, encoding="utf-8", errors="replace").read()
    except OSError as e:
      print(f"{path}: {e}", file=sys.stderr)
      return 2
    for lineno, line in enumerate(strip(text).split("\n"), 1):
      if line.lstrip().startswith("#"):
        continue  # preprocessor lines: #include <sys/mman.h> etc.
      for m in CALL.finditer(line):
        before = line[:m.start()]
        if before.endswith("::") and not GLOBAL_SCOPE_OK.search(before):
          continue
        print(f"{path}:{lineno}: {m.group(1)}(")
        found += 1
  return 1 if found else 0


if __name__ == "__main__":
  sys.exit(main())
