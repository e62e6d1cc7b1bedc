#!/usr/bin/env node
// Runs the dockerfile2gondolin binary of this host's platform package.
import { runBinary } from "../lib/binary.js";

runBinary("dockerfile2gondolin");
