#!/bin/sh
# Bazel workspace status (.bazelrc: build --workspace_status_command): the git commit that
# //services/common:build_info stamps into every binary. STABLE_ keys rebuild what stamps
# them when they change; nothing else is reported, so a rebuild after an unchanged commit
# hits the cache. Offline, and on a tree that is not a git checkout (a tarball, an image
# build without .git) it reports "unknown" and the build still succeeds.
commit=$(git rev-parse --short=12 HEAD 2>/dev/null) || commit=unknown
if [ "$commit" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then
  commit="$commit-dirty"
fi
echo "STABLE_GIT_COMMIT $commit"
