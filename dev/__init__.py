"""Developer tools: the local launcher (./dev.sh up) and the deploy/ generator."""
