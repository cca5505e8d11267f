// cpu_flash against the fp64 reference (filled out below).
#include <gtest/gtest.h>

#include "support.hpp"

namespace fa_test {
namespace {

TEST(FlashVsReference, Smoke) {
  Case c;
  Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  Outputs ours = run(p, Backend::cpu_flash, true);
  Outputs ref = run_reference(p, true);
  for (const Verdict& v : check_outputs(p, ours, ref, nullptr, true)) EXPECT_TRUE(v.ok) << v;
}

}  // namespace
}  // namespace fa_test
