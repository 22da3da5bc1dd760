# janusd, the node agent, and janusctl: static binaries on an empty base.
#
# Build with deploy/docker/build.sh, which compiles the static binaries
# (cargo, the gnu target with crt-static: nothing to load at run time), puts
# them in a build context with this file and runs buildah (or docker/podman:
# JANUS_IMAGE_BUILDER) on it:
#   deploy/docker/build.sh --tag 0.1.0
# By hand, from such a context dir holding janusd and janusctl:
#   buildah bud -f janusd.Dockerfile -t ghcr.io/clustergarage/janusd:0.1.0 .
#
# No shell, no package manager, no libraries: the agent resolves no host
# names (it listens, and talks to the kernel) and trusts only the CA it is
# given (--tls-ca), so it needs nothing from /etc.
# It runs as root (fanotify needs CAP_SYS_ADMIN), with capabilities dropped
# to SYS_ADMIN, SYS_PTRACE and DAC_READ_SEARCH by the DaemonSet.
FROM scratch
COPY janusd janusctl /usr/local/bin/
USER 0:0
EXPOSE 9440 9441
ENTRYPOINT ["/usr/local/bin/janusd"]
CMD ["serve"]
