#include "shard/events.h"

#include "common/strings.h"

namespace wallet::shard {

namespace {
// A name table for a small enum whose values are 0..N-1 (or 1..N with an offset).
template <typename Enum, size_t N>
bool ParseByTable(std::string_view text, const std::string_view (&names)[N], int first_value,
                  Enum* out) {
  for (size_t i = 0; i < N; ++i) {
    if (EqualsIgnoreCase(text, names[i])) {
      *out = static_cast<Enum>(static_cast<int>(i) + first_value);
      return true;
    }
  }
  return false;
}

template <typename Enum, size_t N>
std::string_view NameByTable(Enum value, const std::string_view (&names)[N], int first_value) {
  int index = static_cast<int>(value) - first_value;
  return index >= 0 && static_cast<size_t>(index) < N ? names[index] : std::string_view("unknown");
}

constexpr std::string_view kDirections[] = {"DEBIT", "CREDIT"};           // from 1
constexpr std::string_view kModes[] = {"tcc", "saga"};                    // from 1
constexpr std::string_view kDecisions[] = {"none", "confirm", "cancel"};  // from 0
constexpr std::string_view kPhases[] = {"trying", "confirming", "cancelling", "committed",
                                        "aborted"};                       // from 0
constexpr std::string_view kTryStatuses[] = {"none", "sent", "ok", "failed"};
constexpr std::string_view kEndStatuses[] = {"none", "sent", "done"};
constexpr std::string_view kEventTypes[] = {
    "OPEN",      "DEPOSIT",         "WITHDRAW",   "TRANSFER", "TCC.TRY",   "TCC.CONFIRM", "TCC.CANCEL",
    "SAGA.STEP", "SAGA.COMPENSATE", "ROW.CREATE", "ROW.SET",  "ROW.CLAIM", "COLLECT"};  // from 1
}  // namespace

std::string_view EventTypeName(EventType type) { return NameByTable(type, kEventTypes, 1); }
std::string_view DirectionName(Direction direction) {
  return NameByTable(direction, kDirections, 1);
}
std::string_view ModeName(Mode mode) { return NameByTable(mode, kModes, 1); }
std::string_view DecisionName(Decision decision) { return NameByTable(decision, kDecisions, 0); }
std::string_view RowPhaseName(RowPhase phase) { return NameByTable(phase, kPhases, 0); }
std::string_view TryStatusName(TryStatus status) { return NameByTable(status, kTryStatuses, 0); }
std::string_view EndStatusName(EndStatus status) { return NameByTable(status, kEndStatuses, 0); }

bool ParseDirection(std::string_view text, Direction* out) {
  return ParseByTable(text, kDirections, 1, out);
}
bool ParseMode(std::string_view text, Mode* out) { return ParseByTable(text, kModes, 1, out); }
bool ParseDecision(std::string_view text, Decision* out) {
  return ParseByTable(text, kDecisions, 0, out);
}
bool ParseRowPhase(std::string_view text, RowPhase* out) {
  return ParseByTable(text, kPhases, 0, out);
}
bool ParseTryStatus(std::string_view text, TryStatus* out) {
  return ParseByTable(text, kTryStatuses, 0, out);
}
bool ParseEndStatus(std::string_view text, EndStatus* out) {
  return ParseByTable(text, kEndStatuses, 0, out);
}

}  // namespace wallet::shard
