#include "commands.hpp"
namespace cli {
Command add_bench(CLI::App& app) {
  app.add_subcommand("bench", "todo");
  return [] { return 0; };
}
}  // namespace cli
