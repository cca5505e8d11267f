#!/usr/bin/env bash
# Makes the git-ignored folders that scripts/device.sh carries to the lent GPU
# machine, whose image has no Highway, GoogleTest, pkg-config, CLI11 or
# nlohmann-json: .devdeps/ (pkg-config, Highway, GoogleTest sources) and .clidev/
# (CLI11, nlohmann-json), copied from this machine's Debian packages
# (scripts/install-deps.sh installs them). Then call the device tool with
#   carry [".final", ".devdeps", ".clidev"] and, after
#   rm -rf .final && mkdir .final && git archive HEAD | tar -x -C .final   (here),
#   command: cd .final && ln -sfn ../.devdeps .devdeps && ln -sfn ../.clidev .clidev &&
#            BUILD=/tmp/fa-build bash scripts/device.sh
# (.final is a clean copy of HEAD, so other work in the tree does not travel into the build.)
set -euo pipefail
cd "$(dirname "$0")/.."
lib=/usr/lib/x86_64-linux-gnu
rm -rf .devdeps .clidev
mkdir -p .devdeps/bin .devdeps/lib .devdeps/hwy/lib/pkgconfig .devdeps/hwy/include .clidev/include .clidev/share/cmake
cp "$(readlink -f "$(command -v pkg-config)")" .devdeps/bin/pkg-config
cp "$lib"/libpkgconf.so.3 .devdeps/lib/
cp -a "$lib"/libhwy*.so* .devdeps/hwy/lib/
cp -a /usr/include/hwy .devdeps/hwy/include/
cat > .devdeps/hwy/lib/pkgconfig/libhwy.pc <<'PC'
prefix=${pcfiledir}/../..
libdir=${prefix}/lib
includedir=${prefix}/include

Name: libhwy
Description: Efficient and performance-portable SIMD wrapper
Version: 1.0.3
Libs: -L${libdir} -lhwy
Cflags: -I${includedir} -DHWY_SHARED_DEFINE
PC
cp -a /usr/src/googletest .devdeps/googletest
cp -a /usr/include/CLI /usr/include/nlohmann .clidev/include/
cp -a /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json .clidev/share/cmake/
for d in .devdeps .clidev .final; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
du -sh .devdeps .clidev
