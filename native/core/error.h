#pragma once
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

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

// For checks in loops over tokens or sequences: the message is built only when the check fails, so a
// valid step allocates nothing for its checks.
template <typename MakeMessage, typename = std::enable_if_t<std::is_invocable_r_v<std::string, MakeMessage>>>
inline void require(bool condition, ErrorKind kind, MakeMessage&& make_message) {
  if (!condition) throw Error(kind, std::forward<MakeMessage>(make_message)());
}

}  // namespace falcon
