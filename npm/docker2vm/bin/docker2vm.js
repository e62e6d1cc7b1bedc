#!/usr/bin/env node
// Runs the docker2vm binary of this host's platform package.
import { runBinary } from "../lib/binary.js";

runBinary("docker2vm");
