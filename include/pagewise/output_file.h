// Output files: the rules every pagewise command follows when it writes a
// file, and the check a caller can make before starting long work.
//
// pagewise never writes an output in place: it writes a temporary file in
// the destination's directory (O_EXCL|O_NOFOLLOW, an unpredictable name),
// then renames it over the destination; an interrupted or failed write
// leaves the destination as it was and no temporary file behind. It
// refuses destinations that exist and are not regular files (it neither
// writes through nor replaces a symbolic link, a device, a directory) and
// destinations that are one of the command's inputs, compared by device
// and inode (hard links and symbolic links included).
//
// Thread safety: stateless; safe from any thread.
#ifndef PAGEWISE_OUTPUT_FILE_H_
#define PAGEWISE_OUTPUT_FILE_H_

#include <string>
#include <vector>

#include "pagewise/export.h"
#include "pagewise/status.h"

namespace pagewise {
PAGEWISE_API_BEGIN

// OK if `output` may be (re)written given `inputs` (paths that do not exist
// are ignored). kInvalidArgument naming the conflict otherwise: `output`
// is not a regular file, is the same file as an input, or is the directory
// entry (e.g. a symbolic link) an input path goes through. Errors of
// stat(2) other than "no such file" pass through.
Status CheckOutputPath(const std::string& output, const std::vector<std::string>& inputs);

PAGEWISE_API_END
}  // namespace pagewise

#endif  // PAGEWISE_OUTPUT_FILE_H_
