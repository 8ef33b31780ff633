# understudy agent / controller / CLI image on the official Node base.
#   docker build -t understudy .
#   docker run understudy dist/cmd/agent/main.js --config /etc/understudy/agent.yaml
# (Tests on machines without a registry use a local FROM-scratch Node image with the
# repository mounted instead: see scripts/images.)
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY cmd cmd
COPY pkg pkg
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
USER node
ENTRYPOINT ["node"]
CMD ["dist/cmd/agent/main.js"]
