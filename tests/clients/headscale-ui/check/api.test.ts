// Calls headscale-ui's own request functions (src/lib/common/apiFunctions.svelte) the way its
// pages do, against the server in UI_API_URL, and checks what its stores and return values then
// hold. Written for this project; UI_AUTH_ID is a pending interactive login to register.
import { get } from "svelte/store";
import { describe, expect, test } from "vitest";

import * as api from "$lib/common/apiFunctions.svelte";
import { deviceStore, userStore } from "$lib/common/stores.js";

const run = Date.now().toString(36);
const name = `ui${run}`;
const later = new Date(Date.now() + 3600_000).toISOString();
let userId = "";
let otherId = "";
let nodeId = "";

async function user(n: string) {
  await api.getUsers();
  return get(userStore).find((u: { name: string }) => u.name === n);
}

async function device(id: string) {
  await api.getDevices();
  return get(deviceStore).find((d: { id: string }) => d.id === id);
}

describe.sequential("headscale-ui request functions", () => {
  test("newUser, getUsers, editUser", async () => {
    await api.newUser(name);
    await api.newUser(`${name}-other`);
    userId = (await user(name))!.id;
    otherId = (await user(`${name}-other`))!.id;
    expect(userId).toMatch(/^\d+$/);
    await api.editUser(userId, `${name}-r`);
    expect((await user(`${name}-r`))?.id).toBe(userId);
  });

  test("newUser refused: the server's message reaches the UI", async () => {
    await expect(api.newUser(`${name}-r`)).rejects.toMatch(/\S/);
  });

  test("newPreAuthKey, getPreauthKeys, removePreAuthKey", async () => {
    await api.newPreAuthKey(userId, later, true, false);
    const keys = await api.getPreauthKeys(userId);
    const mine = keys.filter((k: any) => k.user?.id === userId);
    expect(mine.length).toBe(1);
    expect(mine[0].reusable).toBe(true);
    expect(mine[0].key).toMatch(/^hskey-auth-/);
    await api.removePreAuthKey(userId, mine[0].key);
    const after = (await api.getPreauthKeys(userId)).find((k: any) => k.id === mine[0].id);
    expect(new Date(after.expiration).getTime()).toBeLessThanOrEqual(Date.now());
  });

  test("newAPIKey, getAPIKeys, expireAPIKey", async () => {
    const key = await api.newAPIKey(later);
    expect(key).toMatch(/^hskey-api-/);
    const listed = (await api.getAPIKeys()).find((k: any) => key.startsWith(k.prefix.replace(/\*+$/, "")));
    expect(listed).toBeDefined();
    await api.expireAPIKey(listed!.prefix);
    const after = (await api.getAPIKeys()).find((k: any) => k.id === listed!.id);
    expect(new Date(after!.expiration).getTime()).toBeLessThanOrEqual(Date.now());
  });

  test("newDevice, getDevices, renameDevice, updateTags", async () => {
    await api.newDevice(process.env.UI_AUTH_ID!, `${name}-r`);
    await api.getDevices();
    const d = get(deviceStore).find((x: any) => x.user?.id === userId);
    expect(d).toBeDefined();
    nodeId = d!.id;
    await api.renameDevice(nodeId, `${name}-node`);
    expect((await device(nodeId))?.givenName).toBe(`${name}-node`);
    await api.updateTags(nodeId, ["tag:ui"]);
    expect((await device(nodeId))?.tags).toEqual(["tag:ui"]);
  });

  test("moveDevice", async () => {
    await api.updateTags(nodeId, []).catch(() => undefined);
    await api.moveDevice(nodeId, otherId);
    expect((await device(nodeId))?.user?.id).toBe(otherId);
  });

  test("removeDevice, removeUser", async () => {
    await api.removeDevice(nodeId);
    expect(await device(nodeId)).toBeUndefined();
    await api.removeUser(userId);
    await api.removeUser(otherId);
    expect(await user(`${name}-r`)).toBeUndefined();
  });
});
