# mob-agent image, built by scripts/docker-image.sh (not by `docker build .`):
# no image registry is reachable here or in CI, so there is no base image to
# pull. The script stages rootfs/ outside: the mob-agent binary, the shared
# libraries `ldd` lists (and the dynamic loader at its path), a static
# busybox with its applet symlinks (so exec/shell instances have sh, sleep,
# ...), and a minimal /etc. Symlinks are made there rather than by a RUN step:
# scratch has no shell, and one COPY is one layer and needs no build container.
FROM scratch
COPY rootfs/ /
# Not inherited from anywhere on scratch; instances get the agent's PATH.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The gossip port, UDP and TCP (DNS stays on 127.0.0.1:8600 inside).
EXPOSE 7946/udp 7946/tcp
# State (epoch, keyring, table, control socket, logs): keep it across
# container restarts, so a restarted agent takes its slots back.
VOLUME ["/var/lib/mob"]
ENTRYPOINT ["/usr/bin/mob-agent"]
# `docker exec <c> mob-agent members` finds the socket without --agent:
# /var/lib/mob is root's default data dir.
CMD ["run", "--data-dir", "/var/lib/mob", "--bind", "0.0.0.0:7946"]
