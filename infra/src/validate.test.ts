import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

import { describe, expect, it } from "vitest";

import { lintDockerfile, validateComposeText, validateManifestText, validateRepository } from "./validate.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const read = (p: string) => readFileSync(join(root, p), "utf8");

describe("deployment files", () => {
  it("docker-compose.yml, infra/Dockerfile and every manifest of infra/k8s are valid", () => {
    const results = validateRepository(root);
    expect([...results.keys()]).toEqual(expect.arrayContaining(["docker-compose.yml", "infra/Dockerfile", "infra/k8s/keda.yaml", "infra/k8s/audit-ingestor.yaml"]));
    for (const [file, problems] of results) expect(problems, file).toEqual([]);
  });

  it("every service has a Deployment with probes, resources and a PodDisruptionBudget, and KEDA scales the two lag-driven ones", () => {
    for (const app of ["outbox-dispatcher", "audit-ingestor", "revocation-consumer", "policy-invalidator", "observers"]) {
      const text = read(`infra/k8s/${app}.yaml`);
      for (const needle of ["kind: Deployment", "kind: PodDisruptionBudget", "livenessProbe", "readinessProbe", "path: /readyz", "resources:", "secretName: caracal-secrets"]) {
        expect(text, `${app}: ${needle}`).toContain(needle);
      }
      expect(read("docker-compose.yml"), app).toContain(`APP: ${app} }`);
    }
    const keda = read("infra/k8s/keda.yaml");
    expect(keda).toMatch(/consumerGroup: audit-ingestor/);
    expect(keda).toMatch(/consumerGroup: siem-export/);
    expect(keda.match(/type: redis-streams/g)).toHaveLength(2);
  });

  it("the validators fail broken files", () => {
    const compose = read("docker-compose.yml");
    expect(validateComposeText(compose.replace("image: redis:7.4.2-alpine", "image: redis:latest")).join("\n")).toMatch(/not pinned/);
    expect(validateComposeText(compose.replace('ports: ["6379:6379"]', "ports: { bad: true }")).length).toBeGreaterThan(0);
    expect(validateComposeText(compose.replace("restart: unless-stopped", "restart: unless-stopped\n    no_such_key: 1")).join("\n")).toMatch(/additional/i);
    expect(validateComposeText("services:\n  a:\n    image: x:1\n    depends_on: [ghost]\n").join("\n")).toMatch(/no service ghost/);

    expect(lintDockerfile(`${read("infra/Dockerfile")}\nCOPYY . .\n`).join("\n")).toMatch(/Unknown instruction: COPYY/);
    expect(lintDockerfile("FROM node:24.21-slim\nEXPOSE port\n").length).toBeGreaterThan(0);

    const deployment = read("infra/k8s/outbox-dispatcher.yaml");
    expect(validateManifestText(deployment.replace("replicas: 2", "replicas: two")).join("\n")).toMatch(/replicas must be integer/);
    expect(validateManifestText(deployment.replace("containerPort: 9091", "containerPort: ninety")).join("\n")).toMatch(/containerPort/);
    expect(validateManifestText("apiVersion: example.com/v1\nkind: Gadget\nmetadata: { name: g }\n").join("\n")).toMatch(/unknown kind/);
    expect(validateManifestText(read("infra/k8s/keda.yaml").replace("minReplicaCount: 2", "minReplicaCount: many")).length).toBeGreaterThan(0);
  });
});
