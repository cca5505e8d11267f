// flashattn: compute, benchmark and check attention from the command line.
#include <cstdio>
#include <iostream>
#include <string>

#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"flashattn: exact attention computed the FlashAttention way (forward and backward)"};
  app.name("flashattn");
  app.set_version_flag("--version", std::string("flashattn ") + flashattn::kVersion);
  app.require_subcommand(1);
  app.fallthrough(false);

  cli::Command commands[] = {cli::add_run(app), cli::add_bench(app), cli::add_check(app), cli::add_info(app)};
  const char* names[] = {"run", "bench", "check", "info"};

  if (argc > 1 && argv[1][0] != '-') {
    const std::string first = argv[1];
    bool known = false;
    for (const char* n : names) known = known || first == n;
    if (!known) {
      std::cerr << "flashattn: error: unknown command '" << first << "' (expected run, bench, check or info; see --help)\n";
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, whatever CLI11 would add; --help says the rest.
    std::cerr << "flashattn: error: " << e.what() << " (see --help)\n";
    return e.get_exit_code() ? e.get_exit_code() : 2;
  }

  try {
    for (int i = 0; i < 4; ++i)
      if (app.got_subcommand(names[i])) return commands[i]();
  } catch (const flashattn::Error& e) {
    std::cout.flush();
    std::cerr << "flashattn: error: " << e.what() << "\n";
    return 1;
  } catch (const cli::UsageError& e) {
    std::cout.flush();
    std::cerr << "flashattn: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "flashattn: error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
