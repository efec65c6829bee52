#pragma once
#include <stdexcept>
#include <string>

namespace falcon {

// Lets the binding map a failure to the right typed JavaScript error without parsing messages.
enum class ErrorKind { Input, Config, Weights, State };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

inline void require(bool condition, ErrorKind kind, const std::string& message) {
  if (!condition) throw Error(kind, message);
}

}  // namespace falcon
