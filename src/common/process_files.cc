#include "common/process_files.h"

#include <cstdio>
#include <fstream>

#include "common/strings.h"

namespace wallet {

absl::StatusOr<std::string> ReadPasswordFile(const std::string& path) {
  std::ifstream in(path);
  std::string password;
  if (!in || !std::getline(in, password)) {
    return absl::NotFoundError(StrCat("cannot read a password from ", path));
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();  // written with CRLF line ends
  if (password.empty()) return absl::InvalidArgumentError(StrCat("the first line of ", path, " is empty"));
  return password;
}

bool WriteFileAtomically(const std::string& path, const std::string& content) {
  std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    if (!out) return false;
    out << content;
    if (!out.flush()) return false;
  }
  return std::rename(temporary.c_str(), path.c_str()) == 0;
}

}  // namespace wallet
