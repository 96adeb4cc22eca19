// Replaces headplane's tests/integration/setup/env.ts when its API tests run against our
// server (tests/lib/install-headplane-check.sh): instead of starting headscale containers it
// points headplane's own client at the server the environment names. Written for this project.
import { createHeadscale, type Headscale } from "~/server/headscale/api";

// The API level our /version reports; headplane's version test compares the two.
export const HS_VERSIONS = ["0.29.3"] as const;
export type Version = (typeof HS_VERSIONS)[number];

let bootstrap: Headscale | undefined;

async function ensure(): Promise<Headscale> {
  bootstrap ??= await createHeadscale({ url: process.env.UI_API_URL! });
  return bootstrap;
}

export async function getBootstrapClient(_version: Version) {
  return ensure();
}

export async function getRuntimeClient(_version: Version) {
  return (await ensure()).client(process.env.UI_API_KEY!);
}

// A pending interactive login the test harness started, and the host name it announced.
export async function getNode(_version: Version) {
  return { authCode: process.env.UI_AUTH_ID!, nodeName: process.env.UI_NODE_NAME! };
}

export async function stopAllVersions() {
  await bootstrap?.dispose();
  bootstrap = undefined;
}
