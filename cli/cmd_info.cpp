#include "commands.hpp"
namespace cli {
Command add_info(CLI::App& app) {
  app.add_subcommand("info", "todo");
  return [] { return 0; };
}
}  // namespace cli
