#include "commands.hpp"
namespace cli {
Command add_check(CLI::App& app) {
  app.add_subcommand("check", "todo");
  return [] { return 0; };
}
}  // namespace cli
