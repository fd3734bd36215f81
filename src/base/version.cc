// pagewise::Version(): the library's version at run time.
#include "pagewise/version.h"

namespace pagewise {

const char* Version() { return PAGEWISE_VERSION_STRING; }

}  // namespace pagewise
