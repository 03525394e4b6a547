#!/bin/sh
# Sleeps forever: the sandbox process of a pod.
exec sleep infinity
