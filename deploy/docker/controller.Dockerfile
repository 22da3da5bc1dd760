# janus-controller: a static binary on an empty base, non-root.
#
# Build with deploy/docker/build.sh (see janusd.Dockerfile), or by hand from
# a context dir holding the static janus-controller binary:
#   buildah bud -f controller.Dockerfile -t ghcr.io/clustergarage/janus-controller:0.1.0 .
#
# No shell, no libraries. The controller reaches the API server by the
# address and CA Kubernetes gives every pod (KUBERNETES_SERVICE_HOST and the
# service account's ca.crt) and the agents by pod IP, so it needs no DNS
# and no system CA bundle.
FROM scratch
COPY janus-controller /usr/local/bin/
# 65532:65532 ("nonroot"), matching the Deployment's securityContext.
USER 65532:65532
EXPOSE 9442
ENTRYPOINT ["/usr/local/bin/janus-controller"]
