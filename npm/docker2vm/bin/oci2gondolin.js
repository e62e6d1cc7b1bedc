#!/usr/bin/env node
// Runs the oci2gondolin binary of this host's platform package.
import { runBinary } from "../lib/binary.js";

runBinary("oci2gondolin");
